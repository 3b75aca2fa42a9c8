"""Value estimates, by name: VinePPO's Monte Carlo values live in `vineppo.mc`, PPO's critic in
`vineppo.critic`. Re-exported here so `from vineppo.values import ...` keeps working."""

from vineppo.critic import CriticModel
from vineppo.mc import MCRequest, build_mc_requests, estimate_mc_values, mc_state_token_counts

__all__ = ["CriticModel", "MCRequest", "build_mc_requests", "estimate_mc_values", "mc_state_token_counts"]
