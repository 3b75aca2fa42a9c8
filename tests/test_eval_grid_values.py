"""The evaluation grid's rules at their edges (vineppo/evaluate/grid.py): iteration 0 and the last
checkpoint are always on it, a save interval from config.yaml or from the checkpoints' common
divisor, the coarsest grid among runs, and a refused grid's message."""

from __future__ import annotations

import pytest

from vineppo.evaluate.grid import GridError, check_grid, declared_grid, default_grid, on_grid, save_interval


def test_on_grid_multiples_and_the_last():
    assert on_grid(0, 40, 130) and on_grid(80, 40, 130) and on_grid(130, 40, 130)
    assert not on_grid(130, 40, 120) and not on_grid(50, 40, 130)
    assert on_grid(50, 40, 50)  # the last checkpoint, off the multiples
    assert not on_grid(50, 40, None)
    assert on_grid(7, None, None)  # no grid: every checkpoint


def test_save_interval_from_the_config():
    assert save_interval({"save_every": 1}, [10, 20]) == 1
    assert save_interval({"save_every": 25}, []) == 25


def test_save_interval_from_the_checkpoints_without_the_last():
    # no usable save_every: the gcd of the checkpoint iterations, the last (always saved) left out
    assert save_interval({"save_every": 0}, [10, 20, 30, 35]) == 10
    assert save_interval({"save_every": "10"}, [6, 9, 12, 13]) == 3
    assert save_interval({}, [0, 4, 8, 10]) == 4  # iteration 0 (the initial model) is no checkpoint
    assert save_interval({}, ["4", "8", "9"]) == 4
    assert save_interval({}, [8, 12, 12]) == 8  # each iteration once: {8, 12} minus the last
    assert save_interval({}, [30, 20, 10]) == 10  # order does not matter: the last is the largest
    # one checkpoint besides the last, none at all: the gcd of one number, or nothing to tell
    assert save_interval({}, [20, 30]) == 20
    assert save_interval({}, [30]) is None
    assert save_interval({}, [0, 30]) is None  # the initial model and the last checkpoint tell nothing
    assert save_interval({}, [1, 2, 3]) == 1  # a checkpoint at iteration 1 counts
    assert save_interval({}, []) is None


def test_declared_grid_only_a_positive_integer():
    assert declared_grid({"eval_every": 40}) == 40
    assert declared_grid({"eval_every": 1}) == 1
    assert declared_grid({"eval_every": 0}) is None
    assert declared_grid({"eval_every": "40"}) is None
    assert declared_grid({}) is None


def test_default_grid_is_the_coarsest_known():
    assert default_grid([10, None, 40, 20]) == 40
    assert default_grid([None, 15]) == 15
    assert default_grid([]) is None


def test_check_grid_accepts_multiples_and_no_grid():
    check_grid(None, 40, "run", "--every")
    check_grid(40, None, "run", "--every")  # interval unknown: nothing to check against
    check_grid(80, 40, "run", "--every")
    check_grid(1, 1, "run", "--every")


def test_check_grid_messages_name_the_flag_the_run_and_the_interval():
    with pytest.raises(GridError, match=r"^--every must be >= 1, got 0$"):
        check_grid(0, 10, "run", "--every")
    with pytest.raises(GridError, match=r"^--iteration-grid must be >= 1, got -40$"):
        check_grid(-40, None, "run", "--iteration-grid")
    with pytest.raises(GridError, match=r"^ppo \(ppo\) saved a checkpoint every 40 iterations, so it has none on a "
                                        r"grid of 60: use --iteration-grid 40 or a multiple of it$"):
        check_grid(60, 40, "ppo (ppo)", "--iteration-grid")
