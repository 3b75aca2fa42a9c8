"""The rollout Engine interface. An engine knows token ids only: never tasks or rewards (docs/design.md).

Contract shared by every backend (tested by tests/test_engine_interface.py against each one):
- `generate(prompts, sampling)` takes token-id prompts and returns, per prompt, `sampling.n`
  `Completion`s in a deterministic order.
- `Completion.token_ids` are the generated tokens **without** the EOS token, and
  `Completion.text == vineppo.tokens.decode_response(tokenizer, token_ids)`. When a stop string
  ended generation, `text` is cut just before the stop string and `token_ids` keep only the tokens
  that start before the cut (see `trim_at_stop`).
- `finish_reason` is "stop" (EOS or stop string: the response finished) or "length"
  (max_new_tokens reached: unfinished, scored 0 by episodes).
- `stop_token_id` is the stop token that ended the response (the tokenizer's EOS or any other id of
  the model's generation config, e.g. `<|eot_id|>` or `<|end_of_text|>`; see `ending_token`), or
  None when a stop string or the length limit ended it. Episodes train this token as the EOS.
- `update_weights(state_dict)` pushes HF-named policy weights into the running engine in place.
- `sleep()` / `wake()` release and restore engine memory around training (no-op if unsupported).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Literal, Mapping, Sequence

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
    #: one seed per prompt (with `seed` set): a prompt's samples then depend on that prompt and its
    #: seed only, not on the other prompts of the call or their order, so a request gives the same
    #: samples whichever process runs it (`vineppo.mc`'s balanced MC). Honoured where the backend
    #: can seed a request on its own (transformers; vLLM on GPU); vLLM on CPU uses `seed` alone
    #: (per-request seeds crash there), and `Engine.shared_request_seed` overrides it
    request_seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def seeds_per_request(self, n_prompts: int) -> tuple[int, ...] | None:
        """`request_seeds`, checked against the number of prompts of the call (None when unset
        or without `seed`)."""
        if self.request_seeds is None or self.seed is None:
            return None
        if len(self.request_seeds) != n_prompts:
            raise ValueError(f"SamplingParams.request_seeds has {len(self.request_seeds)} seeds for "
                             f"{n_prompts} prompts")
        return tuple(int(s) for s in self.request_seeds)


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    #: log-prob of each token in `token_ids` under log_softmax(logits / temperature), no top-p
    #: truncation: the trainer's definition (spec §1.4). Only if SamplingParams.logprobs.
    logprobs: list[float] | None = None
    #: the stop token id that ended generation (dropped from `token_ids`); None: a stop string or
    #: the length limit ended it
    stop_token_id: int | None = None


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
    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named weights of the current policy into the running engine (no re-creation).
        A mapping is checked whole before anything is loaded; an iterable of (name, tensor) pairs
        is streamed (one tensor at a time, names and shapes checked as they come, completeness at
        the end): the trainer's push, so no full copy of the policy is ever held in host RAM."""

    def update_weights_from_dir(self, model_dir: str | os.PathLike) -> None:
        """Load the weights of a saved HF model directory (its ``*.safetensors``) into the running
        engine, e.g. the next checkpoint of an evaluation sweep. Here: read them, `update_weights`;
        the vLLM backend lets its workers read the directory themselves (no copy through this
        process, none to a temp dir). Raises like `update_weights`, and ValueError without weights."""
        from safetensors.torch import load_file

        files = sorted(Path(model_dir).glob("*.safetensors"))
        if not files:
            raise ValueError(f"{model_dir} has no safetensors weights")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        self.update_weights(state)

    def sleep(self) -> None:
        """Free engine memory before training. No-op where the backend has none."""

    def wake(self) -> None:
        """Restore engine memory after training. No-op where the backend has none."""

    def close(self) -> None:
        """Release the engine."""


def stop_token_ids(tokenizer, generation_eos: int | Sequence[int] | None = None) -> set[int]:
    """The ids that end a generation: the tokenizer's EOS and every EOS id of the model's generation
    config (chat models list several, e.g. Llama-3's `<|eot_id|>` and `<|end_of_text|>`)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if generation_eos is not None:
        ids |= {int(t) for t in ([generation_eos] if isinstance(generation_eos, int) else generation_eos)}
    return ids


def ending_token(generated: Sequence[int], kept: Sequence[int], stop_ids) -> int | None:
    """The stop token that ended a generation: the generated token right after the `kept` ones, if
    it is one of `stop_ids`; None when a stop string (its tokens follow the kept ones) or the
    length limit (nothing follows) ended it."""
    k = len(kept)
    if k < len(generated) and int(generated[k]) in stop_ids:
        return int(generated[k])
    return None


def cut_generation(token_ids: Sequence[int], eos_id: int | Collection[int] | None, decode, stop: Sequence[str]
                   ) -> tuple[list[int], str, bool]:
    """Both backends' end-of-generation rule: cut at the first EOS (dropped; `eos_id` may be one id
    or several, `stop_token_ids`), then at the first stop string (`trim_at_stop`). Returns
    (token_ids, text, ended_by_itself)."""
    ids = list(token_ids)
    ended = False
    ends = set() if eos_id is None else {eos_id} if isinstance(eos_id, int) else set(eos_id)
    first = next((i for i, t in enumerate(ids) if t in ends), None)
    if first is not None:
        ids = ids[:first]
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
