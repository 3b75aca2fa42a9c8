"""The rollout Engine interface. An engine knows token ids only: never tasks or rewards (DESIGN.md).

Contract shared by every backend (tested by tests/test_engine_interface.py against each one):
- `generate(prompts, sampling)` takes token-id prompts and returns, per prompt, `sampling.n`
  `Completion`s in a deterministic order.
- `Completion.token_ids` are the generated tokens **without** the EOS token, and
  `Completion.text == vineppo.tokens.decode_response(tokenizer, token_ids)`. When a stop string
  ended generation, `text` is cut just before the stop string and `token_ids` keep only the tokens
  that start before the cut (see `trim_at_stop`).
- `finish_reason` is "stop" (EOS or stop string: the response finished) or "length"
  (max_new_tokens reached: unfinished, scored 0 by episodes).
- `update_weights(state_dict)` pushes HF-named policy weights into the running engine in place.
- `sleep()` / `wake()` release and restore engine memory around training (no-op if unsupported).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: return the log-prob of each sampled token (sync canary; raw model distribution at `temperature`)
    logprobs: bool = False

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    #: log-prob of each token in `token_ids` under log_softmax(logits / temperature), no top-p
    #: truncation: the trainer's definition (spec §1.4). Only if SamplingParams.logprobs.
    logprobs: list[float] | None = None


@dataclass
class EngineStats:
    """Counters an engine accumulates; loop.py reads and resets them per phase."""

    calls: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def reset(self) -> "EngineStats":
        snap = EngineStats(self.calls, self.prompts, self.prompt_tokens, self.generated_tokens, self.seconds, dict(self.extra))
        self.calls = self.prompts = self.prompt_tokens = self.generated_tokens = 0
        self.seconds = 0.0
        self.extra = {}
        return snap


class Engine(ABC):
    """Generates completions from token-id prompts; receives new policy weights in place."""

    stats: EngineStats
    #: every request of a `generate` call samples with `sampling.seed` itself (the official
    #: code's per-phase seed) instead of a seed of its own (`engine.shared_request_seed`)
    shared_request_seed: bool = False

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                 desc: str | None = None) -> list[list[Completion]]:
        """For each prompt, `sampling.n` completions."""

    @abstractmethod
    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load HF-named weights of the current policy into the running engine (no re-creation)."""

    def sleep(self) -> None:
        """Free engine memory before training. No-op where the backend has none."""

    def wake(self) -> None:
        """Restore engine memory after training. No-op where the backend has none."""

    def close(self) -> None:
        """Release the engine."""


def cut_generation(token_ids: Sequence[int], eos_id: int | None, decode, stop: Sequence[str]
                   ) -> tuple[list[int], str, bool]:
    """Both backends' end-of-generation rule: cut at the first EOS (dropped), then at the first
    stop string (`trim_at_stop`). Returns (token_ids, text, ended_by_itself)."""
    ids = list(token_ids)
    ended = False
    if eos_id is not None and eos_id in ids:
        ids = ids[: ids.index(eos_id)]
        ended = True
    ids, text, stopped = trim_at_stop(ids, decode, stop)
    return ids, text, ended or stopped


def trim_at_stop(token_ids: Sequence[int], decode, stop: Sequence[str]) -> tuple[list[int], str, bool]:
    """Cut a generation at the first stop string.

    Returns (token_ids, text, stopped). `text` is the decoded text up to (excluding) the earliest
    stop string; `token_ids` keep the shortest prefix whose decoding covers `text`, i.e. tokens that
    start inside the stop string are dropped. `decode` maps a list of ids to text.
    """
    ids = list(token_ids)
    text = decode(ids)
    cut = -1
    for s in stop:
        if not s:
            continue
        j = text.find(s)
        if j != -1 and (cut == -1 or j < cut):
            cut = j
    if cut == -1:
        return ids, text, False
    target = text[:cut]
    # smallest k such that decode(ids[:k]) starts with/covers target
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= len(target):
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo], target, True
