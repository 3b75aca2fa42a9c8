"""PPO baseline's value model (spec §1.5): a copy of the SFT policy with a linear value head."""

from __future__ import annotations

import math

import torch
from torch import nn


class CriticModel(nn.Module):
    """A copy of the SFT model with a linear value head on the last hidden state (spec §1.5):
    `Linear(hidden, 1)`, weight ~ N(0, 1/√(hidden+1)), bias 0. `backbone` is the transformer without
    its LM head (`AutoModel`), so every parameter gets a gradient (DDP needs that)."""

    def __init__(self, backbone: nn.Module, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = torch.randn(self.value_head.weight.shape, generator=g) / math.sqrt(hidden + 1)
            self.value_head.weight.copy_(w)
            self.value_head.bias.zero_()
        self.value_head.to(next(backbone.parameters()).dtype)

    @property
    def config(self):
        return self.backbone.config

    def gradient_checkpointing_enable(self, **kw):
        self.backbone.gradient_checkpointing_enable(**kw)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """V(s_t) for every position t: (batch, seq)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        h = out.last_hidden_state
        return self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()
