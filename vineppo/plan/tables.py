"""The plan table of the paper runs that the docs show, regenerated from the planner and checked.

Every config in configs/paper/ is planned under each launch file its header comment names
(`launch/NAME.yaml`: the command it repeats, and any alternative it mentions), on an "80 GB" H100 as
it reports itself (`H100_80GB_BYTES`). The table sits in a document between two marker lines
(`BEGIN`, `END`), so any page can carry it:

    python -m vineppo.plan.tables                  # print the block
    python -m vineppo.plan.tables --write [FILE..] # rewrite the block in each file
    python -m vineppo.plan.tables --check [FILE..] # exit 1 when a file's block is stale

Without FILE: every Markdown page of the repository that carries the markers (README.md, docs/,
launch/; `pages_with_block`).

Shapes come from `PAPER_ARCHITECTURES` (the public config.json fields of the paper models), so the
table is built offline; another model is read with `model_shape` (its config.json)."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from vineppo.plan.advice import make_plan
from vineppo.plan.inputs import GIB, H100_80GB_BYTES, ModelShape, PlanError, model_shape, read_launch
from vineppo.plan.memory import Plan, required_headroom

ROOT = Path(__file__).resolve().parents[2]
PAPER_DIR = ROOT / "configs" / "paper"
LAUNCH_DIR = ROOT / "launch"
BEGIN = "<!-- plan-table:begin -->"
END = "<!-- plan-table:end -->"

#: architecture fields of deepseek-ai/deepseek-math-7b-base's config.json (the 7B SFT checkpoints')
DEEPSEEK_MATH_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                    "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 32,
                    "intermediate_size": 11008, "vocab_size": 102400, "max_position_embeddings": 4096,
                    "tie_word_embeddings": False}
#: architecture fields of Rho-1 / TinyLlama-1.1B's config.json (the 1.1B SFT checkpoints')
RHO_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
          "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
          "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 2048,
          "tie_word_embeddings": False}
#: `model.name_or_path` of the paper configs -> architecture
PAPER_ARCHITECTURES = {
    "realtreetune/deepseekmath-7b-sft-MATH-v2": DEEPSEEK_MATH_7B,
    "realtreetune/deepseekmath-7b-sft-GSM8K": DEEPSEEK_MATH_7B,
    "realtreetune/rho-1b-sft-MATH": RHO_1B,
    "realtreetune/rho-1b-sft-GSM8K": RHO_1B,
}

_LAUNCH_REF = re.compile(r"\blaunch/([\w.-]+\.yaml)\b")


@dataclass
class Row:
    config: Path
    launch: Path
    cfg: object
    plan: Plan


def header_launch_files(config: Path) -> list[str]:
    """Launch files named in the config's leading comment block: the one its command launches with
    (`--config_file launch/NAME.yaml`) first, then the others in order of mention."""
    header = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    names: list[str] = []
    for n in re.findall(r"--config_file launch/([\w.-]+\.yaml)", text) + _LAUNCH_REF.findall(text):
        if n not in names:
            names.append(n)
    return names


def paper_runs(paper_dir: Path = PAPER_DIR, launch_dir: Path = LAUNCH_DIR) -> list[tuple[Path, Path]]:
    """(config, launch file) for every paper config and every launch file its header names."""
    runs = []
    for config in sorted(Path(paper_dir).glob("*.yaml")):
        names = header_launch_files(config)
        if not names:
            raise PlanError(f"{config}: its header comment names no launch/*.yaml (the command that launches it)")
        for name in names:
            launch = Path(launch_dir) / name
            if not launch.is_file():
                raise PlanError(f"{config}: its header names {launch}, which does not exist")
            runs.append((config, launch))
    return runs


def architecture_shape(name_or_path: str) -> ModelShape:
    """Shapes of a paper model from `PAPER_ARCHITECTURES` (offline), else from its config.json."""
    fields = PAPER_ARCHITECTURES.get(name_or_path)
    if fields is None:
        return model_shape(name_or_path)
    from transformers import AutoConfig

    from vineppo.plan.inputs import shape_from_config

    kw = {k: v for k, v in fields.items() if k not in ("architectures", "model_type")}
    return shape_from_config(AutoConfig.for_model(fields["model_type"], architectures=fields["architectures"], **kw))


def plan_rows(capacity: int = H100_80GB_BYTES, paper_dir: Path = PAPER_DIR, launch_dir: Path = LAUNCH_DIR) -> list[Row]:
    from vineppo.config import load_config

    shapes: dict[str, ModelShape] = {}
    others = sorted(Path(launch_dir).glob("*.yaml"))
    rows = []
    for config, launch in paper_runs(paper_dir, launch_dir):
        cfg = load_config(config)
        name = cfg.model.name_or_path
        if name not in shapes:
            shapes[name] = architecture_shape(name)
        rows.append(Row(config, launch, cfg, make_plan(shapes[name], cfg, read_launch(launch), capacity, others)))
    return rows


def _gib(b: int) -> str:
    return f"{b / GIB:.1f}"


def render(rows: list[Row], capacity: int = H100_80GB_BYTES) -> str:
    """The marked block: a sentence on what is planned, then one table row per (config, launch)."""
    lines = [
        BEGIN,
        f"GiB per GPU on an 80 GB H100 as it reports itself ({_gib(capacity)} GiB), worst case (every sequence "
        f"at `sampling.max_sequence_length`). A run fits when its peak leaves max(3 GiB, 4 %) = "
        f"{_gib(required_headroom(capacity))} GiB free and the engine's share leaves a KV cache. Generated by "
        f"`python -m vineppo.plan.tables --write FILE` (a test checks it).",
        "",
        "| run | launch | rollout / MC | log-probs | train step | fits (GiB free at the peak) | engine share set / "
        "largest | KV cache tokens (full-length seqs) | host RAM per node (GiB): load, resident |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.plan
        phases = {ph.name: ph.total for ph in p.phases}
        train = max(phases.get("train", 0), phases.get("train_critic", 0))
        fits = f"yes ({_gib(p.headroom)})" if p.fits else f"no ({_gib(p.headroom)}): {p.suggestion}"
        largest = "none" if p.max_gpu_memory_utilization is None else f"{p.max_gpu_memory_utilization}"
        lines.append(
            f"| {r.config.stem} | `{r.launch.name}` | {_gib(phases['rollout'])} | {_gib(phases['logprobs'])} | "
            f"{_gib(train)} | {fits} | {r.cfg.engine.gpu_memory_utilization} / {largest} | "
            f"{p.kv_cache_tokens / 1000:.0f}k ({p.concurrent_sequences}) | "
            f"{p.host_load_per_node / GIB:.0f}, {p.host_resident_per_node / GIB:.0f} |")
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str, where: str = "the text") -> str:
    """`text` with its marked block replaced by `block` (which carries its own markers)."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < 0 or end < begin or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise PlanError(f"{where}: needs exactly one {BEGIN} line followed by one {END} line")
    return text[:begin] + block + text[end + len(END):]


def pages_with_block(root: Path = ROOT) -> list[Path]:
    """The repository's Markdown pages (README.md, docs/*.md, launch/*.md) that carry `BEGIN`."""
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "launch").glob("*.md"))]
    return [p for p in pages if p.is_file() and BEGIN in p.read_text()]


def stale_files(files, block: str) -> list[Path]:
    """Files whose marked block differs from `block`."""
    return [Path(f) for f in files if replace_block(Path(f).read_text(), block, str(f)) != Path(f).read_text()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vineppo.plan.tables", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", nargs="*", metavar="FILE", default=None,
                      help="rewrite the marked block in each FILE (default: every page that has one)")
    mode.add_argument("--check", nargs="*", metavar="FILE", default=None,
                      help="exit 1 when a FILE's marked block is stale (default: every page that has one)")
    args = ap.parse_args(argv)
    try:
        block = render(plan_rows())
        if args.write is not None:
            for f in args.write or pages_with_block():
                text = Path(f).read_text()
                Path(f).write_text(replace_block(text, block, str(f)))
                print(f"wrote the plan table into {f}")
            return 0
        if args.check is not None:
            stale = stale_files(args.check or pages_with_block(), block)
            for f in stale:
                print(f"{f}: the plan table is stale; run python -m vineppo.plan.tables --write {f}", file=sys.stderr)
            return 1 if stale else 0
    except PlanError as e:
        print(f"vineppo.plan.tables: error: {e}", file=sys.stderr)
        return 2
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
