"""`vineppo compare`'s analyses beyond the main table, on hand-built runs: seeds (groups, mean ±
sample sd, paired differences on shared seeds, bands), cost per iteration by phase, and test vs
train pass@1 per checkpoint. Every expected number is computed by hand in the comments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from test_compare import figures, make_run, plotted  # noqa: F401  (fixture)
from vineppo.compare import compare
from vineppo.compare.cost import phase_cost
from vineppo.compare.generalization import TEST_VS_TRAIN_PLOT, least_squares_slope, train_test_points
from vineppo.compare.runs import Run
from vineppo.compare.seeds import (SEED_JSON, SEED_PLOT, group_by_seed, group_curve, group_pairs, mean_sd,
                                   paired_differences)
from vineppo.evaluate import write_results


# ------------------------------------------------------------------------------------------ seeds


def test_mean_sd_uses_n_minus_1():
    mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
    # deviations -1.5, -0.5, 0.5, 1.5: squares sum to 5; 5 / (4 - 1)
    assert mean == 2.5 and sd == pytest.approx(math.sqrt(5 / 3))
    assert mean_sd([0.40, 0.44, 0.42]) == (pytest.approx(0.42), pytest.approx(0.02))  # sqrt(0.0008 / 2)
    assert mean_sd([5.0]) == (5.0, None)
    assert mean_sd([]) == (None, None)


def test_paired_differences_only_on_shared_seeds():
    seeds, diffs = paired_differences({1: 0.5, 2: 0.6, 3: 0.7}, {2: 0.4, 3: 0.5, 4: 0.9})
    assert seeds == [2, 3] and diffs == [pytest.approx(0.2), pytest.approx(0.2)]
    assert paired_differences({1: 0.5}, {2: 0.5}) == ([], [])


def _run(label: str, config: dict | None, curve: dict[int, float] | None = None) -> Run:
    algorithm = (config or {}).get("algorithm", "unknown")
    return Run(Path(label), label, algorithm, (config or {}).get("data", {}).get("task"), [],
               evals={"test": {it: {"pass@1": p} for it, p in (curve or {}).items()}}, config=config or {})


def _cfg(algorithm: str, seed: int, k: int = 9, run_name: str = "x") -> dict:
    return {"algorithm": algorithm, "seed": seed, "data": {"task": "gsm8k"}, "mc": {"k": k},
            "logging": {"run_name": run_name, "progress": True}}


def test_group_by_seed_ignores_only_the_seed_and_the_runs_name():
    runs = [_run("vineppo-seed2", _cfg("vineppo", 2, run_name="b")),
            _run("ppo-seed1", _cfg("ppo", 1)),
            _run("vineppo-seed1", _cfg("vineppo", 1, run_name="a")),
            _run("k3-seed1", _cfg("vineppo", 1, k=3)),
            _run("k3-seed7", _cfg("vineppo", 7, k=3)),
            _run("orphan", None)]
    groups = group_by_seed(runs)
    assert [[r.label for r in g.runs] for g in groups] == [
        ["vineppo-seed1", "vineppo-seed2"],  # sorted by seed; run_name differs, still one experiment
        ["ppo-seed1"], ["k3-seed1", "k3-seed7"], ["orphan"]]
    assert [g.seeds for g in groups] == [[1, 2], [1], [1, 7], [None]]
    assert [g.label for g in groups] == ["vineppo", "ppo-seed1", "k3", "orphan"]
    # the two VinePPO experiments are told apart by what differs between them
    assert groups[0].settings == {"mc.k": 9} and groups[2].settings == {"mc.k": 3}
    assert groups[1].settings == {}


def test_group_pairs_and_curves_hand_computed():
    ppo = [_run(f"ppo-seed{s}", _cfg("ppo", s), {10: t10, 20: t20})
           for s, t10, t20 in ((1, 0.30, 0.35), (2, 0.31, 0.41), (4, 0.20, 0.30))]
    vine = [_run(f"vineppo-seed{s}", _cfg("vineppo", s), {10: t10, 20: t20})
            for s, t10, t20 in ((1, 0.36, 0.40), (2, 0.38, 0.44), (3, 0.40, 0.42))]
    vine[2].evals["test"][30] = {"pass@1": 0.9}  # one seed only: not on the group's curve
    groups = group_by_seed([*ppo, *vine])
    per_run = {"selected_test": {r.label: dict(r.curve("test"))[20] for r in [*ppo, *vine]}}
    (pair,) = group_pairs(groups, per_run, metrics=["selected_test"])
    # VinePPO first, whatever the order given; seeds 1 and 2 only: 0.40 - 0.35, 0.44 - 0.41
    assert (pair.a, pair.b, pair.seeds) == ("vineppo", "ppo", [1, 2])
    assert pair.values == [pytest.approx(0.05), pytest.approx(0.03)]
    assert pair.mean == pytest.approx(0.04) and pair.sd == pytest.approx(math.sqrt(2 * 0.01 ** 2))
    # curve: iterations all seeds evaluated; at 20 the mean of 0.40, 0.44, 0.42 and sd 0.02
    curve = group_curve(groups[1])
    assert [c[0] for c in curve] == [10, 20]
    assert curve[1][1:] == (pytest.approx(0.42), pytest.approx(0.02), 3)


def _seed_run(root: Path, name: str, algorithm: str, seed: int, test: dict, validation: dict, **cfg) -> Path:
    run = make_run(root, name, algorithm, 10.0, test=test, validation=validation, iterations=20)
    config = {"algorithm": algorithm, "seed": seed, "data": {"task": "gsm8k"}, "logging": {"run_name": name},
              "save_every": 10, **cfg}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_compare_three_seeds_two_algorithms(tmp_path, capsys, figures):  # noqa: F811
    """Validation picks iteration 20 in every run; its test pass@1 is the selected one."""
    val = {10: 0.1, 20: 0.2}
    vine = {1: (0.36, 0.40), 2: (0.38, 0.44), 3: (0.40, 0.42)}
    ppo = {1: (0.30, 0.35), 2: (0.31, 0.41), 4: (0.20, 0.30)}
    dirs = [_seed_run(tmp_path, f"vineppo-seed{s}", "vineppo", s, {10: a, 20: b}, val) for s, (a, b) in vine.items()]
    dirs += [_seed_run(tmp_path, f"ppo-seed{s}", "ppo", s, {10: a, 20: b}, val) for s, (a, b) in ppo.items()]
    out = tmp_path / "cmp"
    result = compare(dirs, out)
    assert "test_vs_iteration_seeds" in result.plots
    data = json.loads((out / SEED_JSON).read_text())
    g = {x["label"]: x for x in data["groups"]}
    assert g["vineppo"]["seeds"] == [1, 2, 3] and g["ppo"]["seeds"] == [1, 2, 4]
    assert g["vineppo"]["selected_test"]["mean"] == pytest.approx(0.42)
    assert g["vineppo"]["selected_test"]["sd"] == pytest.approx(0.02)
    # PPO: 0.35, 0.41, 0.30: mean 0.35333; squared deviations 0.0000111 + 0.0032111 + 0.0028444 = 0.0060667, / 2
    assert g["ppo"]["selected_test"]["mean"] == pytest.approx(1.06 / 3)
    assert g["ppo"]["selected_test"]["sd"] == pytest.approx(math.sqrt(0.0060667 / 2), rel=1e-4)
    assert g["ppo"]["wallclock_hours"]["mean"] == pytest.approx(200 / 3600)
    pairs = {(p["a"], p["b"], p["metric"]): p for p in data["paired_differences"]}
    sel = pairs[("vineppo", "ppo", "selected_test")]
    assert sel["seeds"] == [1, 2] and sel["n"] == 2
    assert sel["mean"] == pytest.approx(0.04) and sel["sd"] == pytest.approx(0.0141421, rel=1e-4)
    md = (out / "compare.md").read_text()
    assert "| vineppo | vineppo | gsm8k | 1, 2, 3 | 3 | 42.0 ± 2.0 |" in md
    assert "| vineppo − ppo | test pass@1 @ selected | 1, 2 | +5.0, +3.0 | +4.0 ± 1.4 (n=2) |" in md
    printed = capsys.readouterr().out
    assert "over seeds:" in printed and "+4.0 ± 1.4 (n=2)" in printed
    records = {r["label"]: r for r in json.loads((out / "compare.json").read_text())}
    assert records["ppo-seed4"]["seed_group"] == "ppo"
    # the bands: the mean line and mean ± sd
    fig = figures[SEED_PLOT]
    lines = plotted(fig)
    assert lines["vineppo (vineppo, 3 seeds)"] == ([10, 20], [pytest.approx(38.0), pytest.approx(42.0)])
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(36.0) and max(band) == pytest.approx(44.0)  # 38 ± 2, 42 ± 2


def test_compare_without_repeated_seeds_writes_no_seed_report(tmp_path):
    a = _seed_run(tmp_path, "a", "vineppo", 1, {10: 0.3, 20: 0.4}, {10: 0.1, 20: 0.2})
    b = _seed_run(tmp_path, "b", "ppo", 1, {10: 0.3, 20: 0.4}, {10: 0.1, 20: 0.2})
    compare([a, b], tmp_path / "cmp", print_table=False)
    assert not (tmp_path / "cmp" / SEED_JSON).exists() and not (tmp_path / "cmp" / SEED_PLOT).exists()
    assert "## Over seeds" not in (tmp_path / "cmp" / "compare.md").read_text()


# ------------------------------------------------------------------------------------------- cost


def _write_metrics(run: Path, rows: list[dict]) -> None:
    with open(run / "metrics.jsonl", "w") as f:
        for i, row in enumerate(rows, start=1):
            f.write(json.dumps({"iteration": i, **row}) + "\n")


VINE_ROWS = [
    {"seconds": 10.0, "generate/seconds": 4.0, "mc/seconds": 3.0, "logprobs/seconds": 1.0, "train/seconds": 1.5,
     "sync/seconds": 0.5, "generate/tokens": 1000, "mc/tokens": 5000, "logprobs/tokens": 800, "train/tokens": 1600},
    {"seconds": 16.0, "generate/seconds": 6.0, "mc/seconds": 5.0, "logprobs/seconds": 1.0, "train/seconds": 1.5,
     "sync/seconds": 0.5, "generate/tokens": 3000, "mc/tokens": 7000, "logprobs/tokens": 1200, "train/tokens": 2400},
]
PPO_ROWS = [
    {"seconds": 4.0, "generate/seconds": 2.0, "logprobs/seconds": 0.5, "train/seconds": 1.0, "sync/seconds": 0.5,
     "generate/tokens": 1000, "train/tokens": 1600},
    {"seconds": 2.0, "generate/seconds": 1.0, "logprobs/seconds": 0.5, "train/seconds": 0.5,
     "generate/tokens": 500, "train/tokens": 800},  # no sync logged: counts 0
]


def test_phase_cost_hand_computed(tmp_path, capsys):
    vine = make_run(tmp_path, "vineppo", "vineppo", 1.0, test={10: 0.3}, validation={10: 0.3})
    ppo = make_run(tmp_path, "ppo", "ppo", 1.0, test={10: 0.3}, validation={10: 0.3})
    _write_metrics(vine, VINE_ROWS)
    _write_metrics(ppo, PPO_ROWS)
    from vineppo.compare import load_run

    c = phase_cost(load_run(vine))
    ph = {p.phase: p for p in c.phases}
    # means: iteration 13 s; generate 5, mc 4, log-probs 1, train 1.5, sync 0.5; other 13 - 12 = 1
    assert c.iterations == 2 and c.seconds == pytest.approx(13.0)
    assert [ph[p].seconds for p in ("generate", "mc", "logprobs", "train", "sync")] == pytest.approx(
        [5.0, 4.0, 1.0, 1.5, 0.5])
    assert ph["generate"].share == pytest.approx(5 / 13) and ph["mc"].share == pytest.approx(4 / 13)
    assert c.other_seconds == pytest.approx(1.0) and c.other_share == pytest.approx(1 / 13)
    assert sum(p.share for p in c.phases) + c.other_share == pytest.approx(1.0)
    assert [ph[p].tokens for p in ("generate", "mc", "logprobs", "train")] == pytest.approx([2000, 6000, 1000, 2000])
    assert ph["sync"].tokens is None
    p = {x.phase: x for x in phase_cost(load_run(ppo)).phases}
    # PPO: 3 s per iteration; no MC at all; sync 0.5 and 0: mean 0.25; other 3 - (1.5 + 0.5 + 0.75 + 0.25) = 0
    assert p["mc"].seconds is None and p["mc"].tokens is None and p["logprobs"].tokens is None
    assert p["sync"].seconds == pytest.approx(0.25) and p["sync"].share == pytest.approx(0.25 / 3)
    assert p["train"].seconds == pytest.approx(0.75) and p["train"].tokens == pytest.approx(1200)

    compare([ppo, vine], tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert ("| vineppo | vineppo | 2 | 13.00 | 5.00 (38 %) | 4.00 (31 %) | 1.00 (8 %) | 1.50 (12 %) | 0.50 (4 %) "
            "| 1.00 (8 %) |") in md
    assert "| ppo | ppo | 2 | 3.00 | 1.50 (50 %) | — | 0.50 (17 %) | 0.75 (25 %) | 0.25 (8 %) | 0.00 (0 %) |" in md
    assert "| vineppo | vineppo | 2.0 k | 6.0 k | 1.0 k | 2.0 k |" in md
    assert "cost per iteration by phase" in capsys.readouterr().out
    records = {r["label"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())}
    assert records["vineppo"]["cost"]["mc"] == {"seconds": 4.0, "share": pytest.approx(4 / 13), "tokens": 6000.0}
    assert records["ppo"]["cost"]["seconds_per_iteration"] == pytest.approx(3.0)


# --------------------------------------------------------------------------------- test vs train


def test_least_squares_slope_hand_computed():
    # x mean 0.6, y mean 0.35333; Sxx = 0.02, Sxy = (-0.1)(-0.05333) + 0 + (0.1)(0.04667) = 0.01
    assert least_squares_slope([(0.5, 0.30), (0.6, 0.36), (0.7, 0.40)]) == pytest.approx(0.5)
    assert least_squares_slope([(0.5, 0.3), (0.7, 0.32), (0.9, 0.34)]) == pytest.approx(0.1)
    assert least_squares_slope([(0.5, 0.3)]) is None
    assert least_squares_slope([(0.5, 0.3), (0.5, 0.4)]) is None


def _add_train(run: Path, train: dict[int, float]) -> None:
    for it, p in train.items():
        write_results(run / "checkpoints" / f"iter_{it:06d}" / "eval" / "train",
                      {"pass@1": p, "iteration": it, "split": "train", "task": "gsm8k", "max_problems": None,
                       "train_subset": 373, "train_subset_seed": 42}, [])


def test_compare_test_vs_train(tmp_path, figures):  # noqa: F811
    vine = make_run(tmp_path, "vineppo", "vineppo", 1.0, test={10: 0.30, 20: 0.36, 30: 0.40, 40: 0.41},
                    validation={10: 0.3, 20: 0.3, 30: 0.3, 40: 0.3})
    ppo = make_run(tmp_path, "ppo", "ppo", 1.0, test={10: 0.30, 20: 0.32, 30: 0.34, 40: 0.35},
                   validation={10: 0.3, 20: 0.3, 30: 0.3, 40: 0.3})
    _add_train(vine, {10: 0.50, 20: 0.60, 30: 0.70})  # 40: test only, left out
    _add_train(ppo, {10: 0.50, 20: 0.70, 30: 0.90})
    from vineppo.compare import load_run

    assert train_test_points(load_run(vine)) == [(10, 0.5, 0.3), (20, 0.6, 0.36), (30, 0.7, 0.4)]
    result = compare([vine, ppo], tmp_path / "cmp", print_table=False)
    assert result.plots["test_vs_train"].name == TEST_VS_TRAIN_PLOT
    assert "test vs train (pass@1 %):" in result.table and "30: 90.0, 34.0" in result.table
    lines = plotted(figures[TEST_VS_TRAIN_PLOT])
    assert lines["vineppo (vineppo)"] == (pytest.approx([50, 60, 70]), pytest.approx([30, 36, 40]))
    assert lines["ppo (ppo)"] == (pytest.approx([50, 70, 90]), pytest.approx([30, 32, 34]))
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| vineppo | vineppo | 3 | 10: 50.0, 30.0 | 30: 70.0, 40.0 | 0.50 |" in md
    assert "| ppo | ppo | 3 | 10: 50.0, 30.0 | 30: 90.0, 34.0 | 0.10 |" in md
    # no train results anywhere: no plot, no section
    (tmp_path / "b").mkdir()
    bare = compare([make_run(tmp_path / "b", "x", "vineppo", 1.0, test={10: 0.3}, validation={10: 0.3})],
                   tmp_path / "cmp2", print_table=False)
    assert "test_vs_train" not in bare.plots
    assert "## Test vs train" not in (tmp_path / "cmp2" / "compare.md").read_text()
