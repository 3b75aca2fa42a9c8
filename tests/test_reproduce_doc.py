"""docs/reproduce.md names real things: configs, launch files (the ones each config's header names),
CLI flags, and the files `vineppo compare` writes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "reproduce.md").read_text()


def _header_launch(config: str) -> str:
    text = (ROOT / "configs" / "paper" / f"{config}.yaml").read_text()
    line = next(l for l in text.splitlines() if "--config_file" in l)
    return line.split("--config_file")[1].split()[0]


def test_every_named_file_exists():
    for path in set(re.findall(r"\b((?:configs|launch)/[\w./-]+\.(?:yaml|sbatch))", DOC)):
        assert (ROOT / path).is_file(), path


def test_loops_launch_each_config_with_its_launch_file():
    loops = re.findall(r"for run in ([^;]+); do\s+accelerate launch --config_file (launch/\S+)", DOC)
    assert len(loops) == 3
    named = set()
    for runs, launch in loops:
        for run in runs.replace("\\", " ").split():
            assert _header_launch(run) == launch, run
            named.add(run)
    # every paper config is among the runs
    assert named == {p.stem for p in (ROOT / "configs" / "paper").glob("*.yaml")}


def test_named_compare_outputs_and_flags_exist():
    from vineppo.cli import build_parser
    from vineppo.compare import PLOT_FILES, VALUE_ERROR_PLOT
    from vineppo.compare.generalization import TEST_VS_TRAIN_PLOT
    from vineppo.compare.seeds import SEED_JSON, SEED_PLOT

    for name in [*PLOT_FILES.values(), VALUE_ERROR_PLOT, TEST_VS_TRAIN_PLOT, SEED_PLOT, SEED_JSON]:
        assert f"`{name}`" in DOC, name
    eval_help = next(a for a in build_parser()._actions if a.dest == "command").choices["eval"].format_help()
    for flag in ("--train-subset", "--train-subset-seed", "--include-initial", "--workers"):
        assert flag in DOC and flag in eval_help, flag
