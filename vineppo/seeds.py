"""Seeds of the rollout engine's sampling calls.

The official code seeds trajectory sampling with `seed + 100·rank + iteration` and MC rollouts with
that + 1, so iteration t's MC rollouts reuse iteration t+1's trajectory seed and rank r at
iteration 100 reuses rank r+1's seeds at iteration 0. Every engine seed here is instead a hash of
(run seed, rank, iteration, phase): distinct across all four, and reproducible from run to run.
"""

from __future__ import annotations

import hashlib

#: the phases that draw from the engine
PHASES = ("engine", "episodes", "mc", "probe")


def derive_seed(run_seed: int, rank: int, iteration: int, phase: str) -> int:
    """A 31-bit seed (vLLM and torch accept it on every platform) from a BLAKE2 hash of the tuple."""
    if phase not in PHASES:
        raise ValueError(f"unknown seed phase {phase!r}; expected one of {PHASES}")
    key = f"vineppo-seed|{int(run_seed)}|{int(rank)}|{int(iteration)}|{phase}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % (2**31 - 1)
