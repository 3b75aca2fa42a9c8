"""Test pass@1 by chain length (vineppo/demo/lengths.py), on hand-written evaluation files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vineppo.demo.lengths import by_ops_line, by_ops_summary, chain_ops, pass_by_ops, plot_by_ops
from vineppo.tasks.chain import generate_chain_problems


def _rows(*lengths: int) -> list[dict]:
    """One chain problem per entry, with that many operations."""
    return [generate_chain_problems(1, seed=i, min_ops=k, max_ops=k)[0] for i, k in enumerate(lengths)]


def _write(path: Path, verdicts: list[list[bool]]) -> None:
    """samples.jsonl: verdicts[problem] = one bool per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"problem_index": i, "sample_index": j, "correct": c}) + "\n"
                            for i, per in enumerate(verdicts) for j, c in enumerate(per)))


def _run(root: Path, name: str, algorithm: str, seed_index: int, final: list[list[bool]],
         sft: list[list[bool]], decoy: list[list[bool]] | None = None) -> dict:
    run_dir = root / name
    _write(run_dir / "checkpoints" / "iter_000004" / "eval" / "test" / "samples.jsonl", final)
    if decoy is not None:  # an earlier checkpoint: never the one reported
        _write(run_dir / "checkpoints" / "iter_000002" / "eval" / "test" / "samples.jsonl", decoy)
    _write(run_dir / "initial" / "eval" / "test" / "samples.jsonl", sft)
    return {"run_dir": str(run_dir), "final_iteration": 4, "algorithm": algorithm, "seed_index": seed_index}


def test_chain_ops_counts_the_solution_lines():
    assert [chain_ops(r) for r in _rows(1, 2, 5, 7)] == [1, 2, 5, 7]


def test_pass_by_ops_tallies_samples_per_length(tmp_path):
    rows = _rows(2, 5, 2)
    f = tmp_path / "samples.jsonl"
    _write(f, [[True, False], [True, True], [False, False]])
    assert pass_by_ops(f, rows) == {2: (1, 4), 5: (2, 2)}
    # a blank line is skipped, not the end of the file
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:2] + ["", "  "] + lines[2:]) + "\n")
    assert pass_by_ops(f, rows) == {2: (1, 4), 5: (2, 2)}


@pytest.mark.parametrize("record", [{"problem_index": 3, "correct": True}, {"problem_index": -1, "correct": True},
                                    {"problem_index": 0, "correct": 1}, {"correct": True}])
def test_pass_by_ops_names_the_file_and_line_of_a_bad_record(tmp_path, record):
    f = tmp_path / "samples.jsonl"
    f.write_text(json.dumps({"problem_index": 0, "correct": True}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"samples\.jsonl:2: .*problem_index") as e:
        pass_by_ops(f, _rows(2, 5, 2))
    got = f"(got problem_index={record.get('problem_index')!r}, correct={record.get('correct')!r})"
    assert str(e.value).endswith(got)


@pytest.mark.parametrize("line", ['{"problem_index": 0, "correct"', "[1, true]"])
def test_pass_by_ops_names_the_line_that_is_not_a_record(tmp_path, line):
    f = tmp_path / "samples.jsonl"
    f.write_text(json.dumps({"problem_index": 0, "correct": True}) + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=r"samples\.jsonl:3: (not a JSON record \(Expecting|needs an integer)"):
        pass_by_ops(f, _rows(2))


def test_by_ops_summary_means_over_seeds_and_pairs_the_gaps_by_seed(tmp_path):
    long_rows, short_rows = _rows(5, 6, 5), _rows(1, 2)
    T, F = True, False
    sft_long, sft_short = [[F, F], [T, F], [F, T]], [[T, T], [F, F]]
    main = {
        "vineppo-seed0": _run(tmp_path, "v0", "vineppo", 0, [[T, T], [T, F], [T, F]], sft_long, decoy=[[F, F]] * 3),
        "ppo-seed0": _run(tmp_path, "p0", "ppo", 0, [[T, F], [F, F], [F, F]], sft_long),
        "vineppo-seed1": _run(tmp_path, "v1", "vineppo", 1, [[T, T], [T, T], [F, F]], sft_long),
        "ppo-seed1": _run(tmp_path, "p1", "ppo", 1, [[F, F], [T, T], [T, F]], sft_long),
    }
    control = {
        "vineppo-seed0": _run(tmp_path, "cv0", "vineppo", 0, [[T, T], [T, F]], sft_short),
        "ppo-seed0": _run(tmp_path, "cp0", "ppo", 0, [[T, F], [T, F]], sft_short),
    }
    s = by_ops_summary([(main, long_rows), (control, short_rows)])
    assert s["ops"] == [1, 2, 5, 6] and s["segments"] == [[5, 6], [1, 2]]
    assert s["problems"] == {"1": 1, "2": 1, "5": 2, "6": 1}
    assert s["sft"] == {"1": 100.0, "2": 0.0, "5": 25.0, "6": 50.0}
    # 5 operations: problems 0 and 2; VinePPO seed 0 3 of 4, seed 1 2 of 4; PPO 1 of 4, 1 of 4
    v5 = s["methods"]["vineppo"]["5"]
    assert v5["values"] == [75.0, 50.0] and v5["mean"] == 62.5 and v5["sd"] == pytest.approx(17.68, abs=0.01)
    assert s["methods"]["ppo"]["6"] == {"mean": 50.0, "sd": pytest.approx(70.71, abs=0.01), "values": [0.0, 100.0]}
    gap = s["vineppo_minus_ppo"]
    assert gap["5"]["values"] == [50.0, 25.0] and gap["5"]["mean"] == 37.5 and gap["5"]["n"] == 2
    assert gap["6"]["values"] == [50.0, 0.0]
    # the control has one seed: no sd, and its lengths come from its own rows
    assert gap["1"] == {"mean": 50.0, "sd": None, "n": 1, "values": [50.0]} and gap["2"]["mean"] == 0.0
    assert s["vineppo_minus_grpo"] is None
    json.dumps(s)  # summary.json-ready: string keys only

    line = by_ops_line(s)
    assert "5: 2 problems" in line and "+37.5" in line and "62.5" in line


def test_by_ops_summary_refuses_a_length_in_two_groups(tmp_path):
    run = {"v": _run(tmp_path, "v", "vineppo", 0, [[True]], [[False]])}
    with pytest.raises(ValueError, match=r"operations \[5\] occur in two groups of runs \(the main runs and "
                                         r"the control must not share a length: demo.data vs demo.control\)$"):
        by_ops_summary([(run, _rows(5)), (run, _rows(5))])


def test_by_ops_summary_rounds_to_two_decimals_and_skips_empty_groups(tmp_path):
    def k_of_7(k: int) -> list[bool]:
        return [True] * k + [False] * (7 - k)

    rows, short = _rows(5, 6), _rows(1)
    sft = [k_of_7(2), k_of_7(0)]
    main = {"v0": _run(tmp_path, "v0", "vineppo", 0, [k_of_7(1), k_of_7(7)], sft),
            "v1": _run(tmp_path, "v1", "vineppo", 1, [k_of_7(3), k_of_7(7)], sft),
            "p0": _run(tmp_path, "p0", "ppo", 0, [k_of_7(0), k_of_7(0)], sft),
            "p1": _run(tmp_path, "p1", "ppo", 1, [k_of_7(0), k_of_7(0)], sft)}
    # the control ran VinePPO only: no paired gap at its length; and an empty group before the others
    control = {"c0": _run(tmp_path, "c0", "vineppo", 0, [k_of_7(1)], [k_of_7(1)])}
    s = by_ops_summary([({}, _rows(7)), (main, rows), (control, short)])
    assert s["ops"] == [1, 5, 6] and s["segments"] == [[5, 6], [1]]
    assert s["sft"] == {"1": 14.29, "5": 28.57, "6": 0.0}
    # sevenths: 1/7 and 3/7, mean 2/7, sample sd 20.203 (to three decimals)
    assert s["methods"]["vineppo"]["5"] == {"mean": 28.57, "sd": 20.2, "values": [14.29, 42.86]}
    assert s["methods"]["vineppo"]["1"] == {"mean": 14.29, "sd": None, "values": [14.29]}
    assert s["vineppo_minus_ppo"]["5"] == {"mean": 28.57, "sd": 20.2, "n": 2, "values": [14.29, 42.86]}
    assert s["vineppo_minus_ppo"]["6"] == {"mean": 100.0, "sd": 0.0, "n": 2, "values": [100.0, 100.0]}
    assert "1" not in s["vineppo_minus_ppo"]


def test_by_ops_summary_without_runs_is_none(tmp_path):
    assert by_ops_summary([({}, _rows(5))]) is None
    assert plot_by_ops(tmp_path / "x.png", None) is None


def test_plot_by_ops_writes_the_figure(tmp_path):
    rows = _rows(5, 6)
    runs = {"vineppo": _run(tmp_path, "v", "vineppo", 0, [[True], [False]], [[False], [False]]),
            "grpo": _run(tmp_path, "g", "grpo", 0, [[False], [False]], [[False], [False]])}
    s = by_ops_summary([(runs, rows)])
    assert s["vineppo_minus_grpo"]["5"]["mean"] == 100.0
    out = plot_by_ops(tmp_path / "by_ops.png", s)
    assert out == tmp_path / "by_ops.png" and out.stat().st_size > 10_000
