"""Write docs/configuration.md, the configuration reference, from the config dataclasses.

    python tools/config_reference.py            # (re)write docs/configuration.md
    python tools/config_reference.py --check    # exit 1 if the page is not what the code generates

Every key of the training config (`vineppo.config.TrainConfig`), the evaluation settings
(`vineppo.evaluate.settings.EvalSettings`, plus the other `vineppo eval` options from its argparse
parser) and the demo config (`vineppo.demo.config.DemoSettings` under `demo:`, and the training keys
`configs/demo.yaml` sets) is listed with its type, default and meaning. The meaning is the field's
`#:` comment, the lines directly above the field in the dataclass (Sphinx's convention); a field
without one is an error, so a new key cannot reach the page undocumented. The source is read with
`ast` (types as written, comments) and the defaults from the dataclasses themselves.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
DEMO_YAML = ROOT / "configs" / "demo.yaml"


@dataclass
class Row:
    key: str
    type: str
    default: str
    meaning: str


@dataclass
class Section:
    """One dataclass's rows under a dotted prefix (`ppo.`), with the class docstring as its intro."""
    prefix: str
    intro: str
    rows: list[Row]


# --------------------------------------------------------------------------- reading the source

def field_comments(cls) -> dict[str, str]:
    """The `#:` comment block directly above each annotated field of dataclass `cls`, joined into
    one line. A plain `#` comment (a group heading) or a blank line ends the block."""
    src = textwrap.dedent(inspect.getsource(cls))
    lines = src.splitlines()
    tree = ast.parse(src)
    body = tree.body[0].body
    out = {}
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        block = []
        i = node.lineno - 2  # the line above, 0-based
        while i >= 0 and lines[i].strip().startswith("#:"):
            block.append(lines[i].strip()[2:].strip())
            i -= 1
        out[node.target.id] = " ".join(reversed(block)).strip()
    return out


def class_doc(cls) -> str:
    """The class's own docstring, one line (a dataclass without one gets a generated signature as
    `__doc__`, which is not documentation)."""
    doc = ast.get_docstring(ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]) or ""
    return " ".join(doc.split())


def field_types(cls) -> dict[str, str]:
    """Each field's annotation as written in the source, `Literal[...]` shown as its choices."""
    src = textwrap.dedent(inspect.getsource(cls))
    out = {}
    for node in ast.parse(src).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = _render_type(node.annotation)
    return out


def _render_type(node: ast.expr) -> str:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return f"{_render_type(node.left)} | {_render_type(node.right)}"
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return " | ".join(format_value(e.value) for e in elts)
    if isinstance(node, ast.Constant) and node.value is None:
        return "null"
    return ast.unparse(node)


def format_value(v) -> str:
    """A default as it would be written in YAML."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        s = repr(v)
        if "e" in s:
            mantissa, exp = s.split("e")
            s = f"{mantissa}e{int(exp)}"
        return s
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {format_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _section_class(tp):
    """The dataclass of a field typed `SomeConfig` or `SomeConfig | None`, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def sections(cls, prefix: str = "", intro: str | None = None) -> list[Section]:
    """`cls`'s own leaf fields as one Section, then one Section per nested dataclass field,
    depth first, in the order of the source."""
    hints = typing.get_type_hints(cls)
    comments, types = field_comments(cls), field_types(cls)
    own = Section(prefix.rstrip("."), class_doc(cls) if intro is None else intro, [])
    nested: list[Section] = []
    for f in dataclasses.fields(cls):
        sub = _section_class(hints[f.name])
        default = _default(f)
        if sub is not None and default is not None:  # an always-present section: its own table
            text = _sentences(comments.get(f.name, ""), class_doc(sub))
            nested.extend(sections(sub, f"{prefix}{f.name}.", intro=text))
            continue
        shown = "(required)" if default is dataclasses.MISSING else format_value(default)
        own.rows.append(Row(prefix + f.name, types[f.name], shown, comments.get(f.name, "")))
        if sub is not None:  # an optional section (null by default): its keys follow
            nested.extend(sections(sub, f"{prefix}{f.name}.",
                                   intro=f"Set when `{prefix}{f.name}` is not null (e.g. "
                                         f"`{prefix}{f.name}.{dataclasses.fields(sub)[0].name}=...`)."))
    return ([own] if own.rows else []) + nested


def _sentences(*parts: str) -> str:
    """Join texts into sentences: the first capitalised, each ending in a full stop."""
    out = []
    for p in (p.strip() for p in parts):
        if p:
            p = p[0].upper() + p[1:]
            out.append(p if p.endswith((".", ")")) else p + ".")
    return " ".join(out)


def missing_meanings(secs: list[Section]) -> list[str]:
    return [r.key for s in secs for r in s.rows if not r.meaning]


# --------------------------------------------------------------------------- the three configs

def train_sections() -> list[Section]:
    from vineppo.config import TrainConfig

    return sections(TrainConfig)


def eval_sections() -> list[Section]:
    from vineppo.evaluate.settings import EvalSettings

    return sections(EvalSettings)


def demo_sections() -> list[Section]:
    from vineppo.demo.config import DemoSettings

    return sections(DemoSettings, "demo.")


def eval_options() -> list[Row]:
    """Every option of `vineppo eval` (its parser is the source), for the CLI table."""
    from vineppo.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    rows = []
    for a in sub._actions:
        if not a.option_strings or a.dest == "help":
            continue
        if a.nargs == 0:
            default = "off"
        else:
            default = "—" if a.default is None else " ".join(map(str, a.default)) if isinstance(a.default, list) \
                else str(a.default)
        choices = f" ({' / '.join(map(str, a.choices))})" if a.choices else ""
        rows.append(Row(", ".join(a.option_strings), "", default, ((a.help or "") + choices).strip()))
    return rows


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def demo_yaml_values() -> dict[str, object]:
    import yaml

    return _flatten(yaml.safe_load(DEMO_YAML.read_text()))


# --------------------------------------------------------------------------- the page

def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table(secs: list[Section], demo_values: dict | None = None, top: str = "top level") -> list[str]:
    out = []
    for s in secs:
        out.append(f"### `{s.prefix}`" if s.prefix else f"### {top}")
        out.append("")
        if s.intro:
            out += [s.intro, ""]
        if demo_values is None:
            out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        else:
            out += ["| key | type | default | `configs/demo.yaml` | meaning |", "|---|---|---|---|---|"]
        for r in s.rows:
            cells = [f"`{r.key}`", f"`{_cell(r.type)}`", f"`{_cell(r.default)}`"]
            if demo_values is not None:
                cells.append(f"`{_cell(format_value(demo_values[r.key]))}`" if r.key in demo_values else "")
            cells.append(_cell(r.meaning))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def generate() -> str:
    train, ev, demo = train_sections(), eval_sections(), demo_sections()
    missing = missing_meanings(train + ev + demo)
    if missing:
        raise SystemExit("config keys without a `#:` comment above their field: " + ", ".join(missing))
    demo_values = demo_yaml_values()
    train_defaults = {r.key: r.default for s in train for r in s.rows}
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python tools/config_reference.py` from the config dataclasses and their",
        "     `#:` field comments; edit those, then rerun it (tests/test_config_reference.py fails when this page is stale) -->",
        "",
        "Every key, its type, its default and what it does. Set keys in a YAML file (`configs/`) or on",
        "the command line as dotted overrides: `vineppo train --config C --output-dir D mc.k=3 optim.lr=1e-5`",
        "(values are read as YAML: `3`, `1e-6`, `true`, `null`, `[a, b]`). An unknown key or a value of the",
        "wrong type stops with an error naming it.",
        "",
        "- [Training](#training-vineppo-train-vineppo-plan): `vineppo train`, `vineppo plan` (`vineppo.config.TrainConfig`)",
        "- [Evaluation](#evaluation-vineppo-eval): `vineppo eval` (`vineppo.evaluate.settings.EvalSettings` and the command's options)",
        "- [Demo](#demo-vineppo-demo): `vineppo demo` (`configs/demo.yaml`: the training keys plus `demo:`)",
        "",
        "## Training (`vineppo train`, `vineppo plan`)",
        "",
        "Defaults are the paper's unless a comment says otherwise; the shipped configs set the rest",
        "(`configs/paper/`, `configs/tiny/`, `configs/examples/`).",
        "",
    ]
    lines += _table(train)
    lines += [
        "## Evaluation (`vineppo eval`)",
        "",
        "The sampling protocol of an evaluation (`EvalSettings`; defaults: the paper's). Each is set",
        "with the `vineppo eval` option of the same name (`n_samples`: `--n-samples`); they are recorded",
        "in `results.json`, and a checkpoint counts as already evaluated only under the same settings.",
        "",
    ]
    lines += _table(ev, top="`EvalSettings`")
    settings = {r.key: r.meaning for s in ev for r in s.rows}
    lines += ["### all `vineppo eval` options", "", "| option | default | meaning |", "|---|---|---|"]
    for r in eval_options():
        name = r.key.split(",")[0].lstrip("-").replace("-", "_")
        meaning = r.meaning if r.meaning else settings.get(name, "")
        lines.append(f"| `{_cell(r.key)}` | `{_cell(r.default)}` | {_cell(meaning)} |")
    lines += [
        "",
        "## Demo (`vineppo demo`)",
        "",
        "`configs/demo.yaml` is a training config (every key above; the demo sets `algorithm`,",
        "`model.name_or_path` and `data.source` per run) plus a `demo:` section. Overrides address both:",
        "`vineppo demo iterations=30 mc.k=5 demo.eval.n_samples=16`.",
        "",
        "### training keys `configs/demo.yaml` sets",
        "",
        "| key | `configs/demo.yaml` | training default |",
        "|---|---|---|",
    ]
    for k, v in demo_values.items():
        if not k.startswith("demo."):
            lines.append(f"| `{k}` | `{_cell(format_value(v))}` | `{_cell(train_defaults.get(k, '—'))}` |")
    lines.append("")
    lines += _table(demo, demo_values)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = p.parse_args(argv)
    text = generate()
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `python tools/config_reference.py`", file=sys.stderr)
            return 1
        print(f"{PAGE.relative_to(ROOT)} is current")
        return 0
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
