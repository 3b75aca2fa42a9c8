"""Seeds of the rollout engine's sampling calls.

The official code seeds trajectory sampling with `seed + 100·rank + iteration` and MC rollouts with
that + 1, so iteration t's MC rollouts reuse iteration t+1's trajectory seed and rank r at
iteration 100 reuses rank r+1's seeds at iteration 0; and every request of a phase on a rank gets
that one seed (common random numbers across the MC states). Every engine seed here is instead a
hash of (run seed, rank, iteration, phase): distinct across all four, and reproducible from run to
run; the engines spread it into one seed per request (MC: one per state from its content, the
same on every rank, `mc_seed`). `engine.shared_request_seed` restores the official seeds
(`phase_seed`).
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


def official_seed(run_seed: int, rank: int, iteration: int, phase: str) -> int:
    """The official code's phase seed: `seed + 100·rank + iteration` for the episodes, + 1 for the
    MC rollouts (spec §1.6); phases it does not have (engine start-up, value probe) keep ours."""
    if phase == "episodes":
        return int(run_seed) + 100 * int(rank) + int(iteration)
    if phase == "mc":
        return int(run_seed) + 100 * int(rank) + int(iteration) + 1
    return derive_seed(run_seed, rank, iteration, phase)


def mc_seed(run_seed: int, rank: int, iteration: int, *, shared_request_seed: bool = False) -> int:
    """The MC phase's seed. Every MC state draws with a seed of its own, a hash of this seed and
    the state (`vineppo.mc.request_seed`), so the phase seed is rank 0's on every rank: a state's
    rollouts are then the same whichever rank estimates it (balanced MC, `mc.balance`). With
    `shared_request_seed` each rank keeps the official per-rank seed for all its states."""
    return phase_seed(run_seed, rank if shared_request_seed else 0, iteration, "mc",
                      shared_request_seed=shared_request_seed)


def phase_seed(run_seed: int, rank: int, iteration: int, phase: str, *, shared_request_seed: bool = False) -> int:
    """The seed a phase hands the engine: `derive_seed`, or with `shared_request_seed` (the
    engine then gives every request this one seed) the official one (`official_seed`)."""
    if shared_request_seed:
        return official_seed(run_seed, rank, iteration, phase)
    return derive_seed(run_seed, rank, iteration, phase)
