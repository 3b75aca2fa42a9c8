"""The exact engine seeds (vineppo/seeds.py): a run's seeds are a documented function of (run seed,
rank, iteration, phase), so a run is reproducible from its config across versions; the official
seeds under `engine.shared_request_seed` are `seed + 100·rank + iteration` (+ 1 for MC)."""

from __future__ import annotations

import hashlib

import pytest

from vineppo.seeds import derive_seed, official_seed, phase_seed


def _blake2_seed(text: str) -> int:
    # the definition in derive_seed's docstring: BLAKE2b, 8 bytes, little-endian, modulo 2^31 − 1
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") % (2**31 - 1)


@pytest.mark.parametrize("args", [(7, 1, 3, "mc"), (2746318213, 0, 0, "episodes"), (0, 5, 99, "probe"),
                                  (1, 0, 0, "engine")])
def test_derive_seed_is_the_blake2_hash_of_the_tuple(args):
    seed, rank, it, phase = args
    assert derive_seed(*args) == _blake2_seed(f"vineppo-seed|{seed}|{rank}|{it}|{phase}")


def test_derive_seed_reads_numbers_as_integers():
    assert derive_seed(7.0, 1.0, 3.0, "mc") == derive_seed(7, 1, 3, "mc")


def test_unknown_phase_names_the_phase_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown seed phase 'train'; expected one of \('engine', 'episodes', "
                                         r"'mc', 'probe'\)"):
        derive_seed(7, 0, 0, "train")


def test_official_seeds_hand_computed():
    # seed 5, rank 2, iteration 7: 5 + 100·2 + 7 = 212 for the episodes, 213 for the MC rollouts
    assert official_seed(5, 2, 7, "episodes") == 212
    assert official_seed(5, 2, 7, "mc") == 213
    assert official_seed(5.0, 2.0, 7.0, "mc") == 213
    # phases the official code has no seed for keep ours
    assert official_seed(5, 2, 7, "engine") == derive_seed(5, 2, 7, "engine")
    assert official_seed(5, 2, 7, "probe") == derive_seed(5, 2, 7, "probe")


def test_phase_seed_is_ours_unless_shared_request_seed():
    assert phase_seed(5, 2, 7, "episodes") == derive_seed(5, 2, 7, "episodes")
    assert phase_seed(5, 2, 7, "mc", shared_request_seed=False) == derive_seed(5, 2, 7, "mc")
    assert phase_seed(5, 2, 7, "mc", shared_request_seed=True) == 213
