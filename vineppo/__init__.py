"""vineppo: VinePPO and PPO for LLM math reasoning (Kazemnejad et al., arXiv 2410.01679)."""

__version__ = "0.1.0"
