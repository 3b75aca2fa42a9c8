"""Commands that cannot rot: every command shown in a shell code block of README.md, launch/README.md
and docs/*.md must still run as written, as far as that can be checked without running it.

Collected: `vineppo ...`, `python -m vineppo ...`, `accelerate launch ... -m vineppo ...`, `make ...`,
`python benchmarks/... | tools/...`, `sbatch ...`. Checked:
- the sub-command and its flags parse with the real parser (`vineppo.cli.build_parser`), options
  and dotted overrides in any order as the CLI allows;
- `train` / `plan` load their config with the overrides (`vineppo.config.load_config`: the file
  exists, every dotted key is a real key, every value has the key's type); `demo` loads the demo
  config with its overrides, and `--algorithms` names real methods;
- `accelerate launch`'s own options parse with accelerate's parser;
- a `make` target exists in the Makefile (and `make demo ARGS="..."` passes the demo's parser);
- a script exists, and every `--flag` given to it is one its argparse parser declares (read from
  its source: no import, so no heavy dependency loads);
- every path under configs/, launch/, benchmarks/, tools/, tests/ or docs/ that a command names
  (also in `VAR=path` assignments) exists.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "launch" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
PATH_RE = re.compile(r"^(configs|launch|benchmarks|tools|tests|docs)/[\w./-]+$")
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass
class Command:
    where: str  # file:line
    kind: str   # vineppo, accelerate, make, script, sbatch
    argv: list[str]
    env: dict[str, str]


# --------------------------------------------------------------------------- collecting

def shell_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced code block in a shell language (or none)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start, i = m.group(1).lower(), i + 2, i + 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            out.append((start, "\n".join(body)))
    return out


def logical_lines(block: str) -> list[tuple[int, str]]:
    """(offset of the first physical line, text) with backslash continuations joined."""
    lines, out, j = block.split("\n"), [], 0
    while j < len(lines):
        first, line = j, lines[j]
        while line.rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
            line = line.rstrip()[:-1] + " " + lines[j]
        j += 1
        out.append((first, line))
    return out


FOR_RE = re.compile(r"^\s*for\s+(\w+)\s+in\s+(.*?);\s*do\b(.*)$")


def expand_loops(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines inside `for VAR in a b c; do ... done` once per value, `$VAR` / `${VAR}` substituted
    (nested loops multiply), so a loop over configs checks every config it names."""
    out: list[tuple[int, str]] = []
    stack: list[tuple[str, list[str]]] = []

    def emit(offset: int, line: str) -> None:
        variants = [line]
        for var, values in stack:
            variants = [re.sub(r"\$\{?%s\}?(?!\w)" % var, v, x) for x in variants for v in values]
        out.extend((offset, x) for x in variants)

    for offset, line in lines:
        m = FOR_RE.match(line)
        if m:
            stack.append((m.group(1), shlex.split(m.group(2))))
            rest = m.group(3).strip()
            closes = re.search(r";\s*done\s*$", rest)
            if closes:
                rest = rest[: closes.start()]
            if rest:
                emit(offset, rest)
            if closes:
                stack.pop()
            continue
        if re.match(r"^\s*done\s*$", line) and stack:
            stack.pop()
            continue
        emit(offset, line)
    return out


def commands_in(text: str, name: str) -> list[Command]:
    cmds = []
    for start, block in shell_blocks(text):
        for first, line in expand_loops(logical_lines(block)):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            part: list[str] = []
            for tok in tokens + [";"]:
                if tok in SEPARATORS:
                    cmd = classify(part, f"{name}:{start + first}")
                    if cmd is not None:
                        cmds.append(cmd)
                    part = []
                else:
                    part.append(tok)
    return cmds


def classify(tokens: list[str], where: str) -> Command | None:
    env = {}
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        k, v = tokens[0].split("=", 1)
        env[k] = v
        tokens = tokens[1:]
    if not tokens:
        return None
    head = tokens[0]
    if head == "vineppo":
        return Command(where, "vineppo", tokens[1:], env)
    if head in ("python", "python3") and tokens[1:3] == ["-m", "vineppo"]:
        return Command(where, "vineppo", tokens[3:], env)
    if head in ("python", "python3") and len(tokens) > 1 and tokens[1].endswith(".py"):
        return Command(where, "script", tokens[1:], env)
    if head == "accelerate" and tokens[1:2] == ["launch"]:
        return Command(where, "accelerate", tokens[2:], env)
    if head == "make":
        return Command(where, "make", tokens[1:], env)
    if head == "sbatch":
        return Command(where, "sbatch", tokens[1:], env)
    return None


def collect() -> list[Command]:
    return [c for doc in DOCS for c in commands_in(doc.read_text(), str(doc.relative_to(ROOT)))]


# --------------------------------------------------------------------------- checking

def _parse_vineppo(argv: list[str]):
    """(args, error): the CLI's own parser, as `vineppo.cli.main` builds it."""
    from vineppo.cli import _add_verbose, build_parser, parse_args

    parser = build_parser()
    _add_verbose(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_args(parser, argv), None
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse error"


def check_vineppo(argv: list[str]) -> list[str]:
    from vineppo.config import ConfigError, load_config

    args, error = _parse_vineppo(argv)
    if error:
        return [f"`vineppo {' '.join(argv)}`: {error}"]
    try:
        if args.command in ("train", "plan"):
            load_config(ROOT / args.config if not Path(args.config).is_absolute() else args.config, args.overrides)
        elif args.command == "demo":
            from vineppo.demo.config import ALGORITHMS, load_demo_config

            from vineppo.cli import demo_methods

            methods, overrides = demo_methods(args)
            load_demo_config(args.config, overrides)
            bad = [a for a in methods or [] if a not in ALGORITHMS]
            if bad:
                return [f"`vineppo demo --algorithms`: unknown method(s) {bad}"]
    except ConfigError as e:
        return [f"`vineppo {' '.join(argv)}`: config error: {e}"]
    return []


def check_accelerate(argv: list[str]) -> list[str]:
    if "-m" not in argv or argv[argv.index("-m") + 1:argv.index("-m") + 2] != ["vineppo"]:
        return [f"`accelerate launch {' '.join(argv)}`: expected `-m vineppo ...`"]
    i = argv.index("-m")
    from accelerate.commands.launch import launch_command_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            launch_command_parser().parse_args(argv[:i + 2])
    except SystemExit:
        return [f"`accelerate launch {' '.join(argv[:i])}`: {err.getvalue().strip().splitlines()[-1]}"]
    return check_vineppo(argv[i + 2:])


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def check_make(argv: list[str]) -> list[str]:
    targets = [a for a in argv if "=" not in a and not a.startswith("-")]
    assigns = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    known = make_targets()
    problems = [f"`make {t}`: no such target in the Makefile" for t in targets if t not in known]
    if "demo" in targets:  # the recipe: vineppo demo --output-dir $(DEMO_DIR) $(ARGS)
        problems += check_vineppo(["demo", "--output-dir", assigns.get("DEMO_DIR", "vineppo-demo"),
                                   *shlex.split(assigns.get("ARGS", ""))])
    return problems


def script_flags(path: Path) -> set[str] | None:
    """The `--flags` a script's argparse parser declares, read from its source; None: no parser."""
    flags, parser = set(), False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "ArgumentParser":
                parser = True
            if node.func.attr == "add_argument":
                flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return flags if parser else None


def check_script(argv: list[str]) -> list[str]:
    path = ROOT / argv[0]
    if not path.is_file():
        return [f"`python {argv[0]}`: no such script"]
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and a not in ("-h", "--help")]
    flags = script_flags(path)
    if flags is None:
        return [f"`python {argv[0]}`: takes no options, given {given}"] if given else []
    return [f"`python {' '.join(argv)}`: {argv[0]} has no option {g}" for g in given if g not in flags]


def check_paths(cmd: Command) -> list[str]:
    words = cmd.argv + list(cmd.env.values())
    words += [w.split("=", 1)[1] for w in cmd.argv if "=" in w and not w.startswith("-")]
    return [f"names {w}, which does not exist" for w in words if PATH_RE.match(w) and not (ROOT / w).exists()]


def check(cmd: Command) -> list[str]:
    problems = check_paths(cmd)
    if cmd.kind == "vineppo":
        problems += check_vineppo(cmd.argv)
    elif cmd.kind == "accelerate":
        problems += check_accelerate(cmd.argv)
    elif cmd.kind == "make":
        problems += check_make(cmd.argv)
    elif cmd.kind == "script":
        problems += check_script(cmd.argv)
    elif cmd.kind == "sbatch" and not any(a.endswith(".sbatch") for a in cmd.argv):
        problems.append("sbatch without a script")
    return problems


# --------------------------------------------------------------------------- tests

COMMANDS = collect()


def test_the_docs_show_commands_of_every_kind():
    """The collector finds the docs' commands (a broken collector would pass everything)."""
    kinds = {c.kind for c in COMMANDS}
    assert {"vineppo", "accelerate", "make", "script", "sbatch"} <= kinds, kinds
    assert len(COMMANDS) >= 40, len(COMMANDS)
    assert any(c.where.startswith("README.md:") for c in COMMANDS)
    assert any(c.where.startswith("docs/") for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_every_documented_command_parses(cmd):
    problems = check(cmd)
    assert not problems, f"{cmd.where}: " + "; ".join(problems)


BAD = '''
```bash
vineppo train --config configs/tiny/gsm8k_vineppo.yaml --output-dir runs/x mc.kk=3
vineppo train --config configs/tiny/no_such.yaml --output-dir runs/x
vineppo train --config configs/tiny/gsm8k_vineppo.yaml --output-dir runs/x --no-such-flag
vineppo train --config configs/tiny/gsm8k_vineppo.yaml --output-dir runs/x iterations=many
vineppo evaluate --run runs/x
vineppo demo --algorithms vineppo,trpo
vineppo demo demo.eval.samples=3
accelerate launch --config_file launch/no_such.yaml -m vineppo train --config configs/tiny/gsm8k_ppo.yaml --output-dir r
accelerate launch --bogus -m vineppo train --config configs/tiny/gsm8k_ppo.yaml --output-dir r
make no-such-target
make demo ARGS="--seeds"
python benchmarks/no_such.py
python benchmarks/mc_budget.py --no-such-flag
CONFIG=configs/paper/no_such.yaml sbatch launch/slurm.sbatch
```
'''

GOOD = '''
Prose with `vineppo train --bogus` is not a code block.
```yaml
mc: {k: 3}
```
```bash
# a comment; pip lines are not checked
pip install -e ".[dev]"
vineppo train --config configs/tiny/gsm8k_vineppo.yaml --output-dir runs/x \\
  mc.k=3 optim.lr=1e-5 --resume model.lora.r=8
python -m vineppo -v demo --output-dir d --seeds 2 iterations=3 demo.eval.n_samples=4 && make test-fast
accelerate launch --cpu --num_processes 2 -m vineppo train --config configs/tiny/gsm8k_ppo.yaml --output-dir r
python benchmarks/mc_budget.py --sweep
CONFIG=configs/paper/rho1b_math_ppo.yaml LAUNCH=launch/ddp_4gpu.yaml sbatch --gpus-per-node=4 launch/slurm.sbatch
```
'''


def test_the_checker_catches_each_kind_of_rot():
    bad = commands_in(BAD, "bad.md")
    assert len(bad) == 14
    for cmd in bad:
        assert check(cmd), f"not caught: {cmd.where} {cmd.argv}"
    good = commands_in(GOOD, "good.md")
    assert [c.kind for c in good] == ["vineppo", "vineppo", "make", "accelerate", "script", "sbatch"]
    assert good[0].argv[-3:] == ["optim.lr=1e-5", "--resume", "model.lora.r=8"]  # continuation joined
    for cmd in good:
        assert check(cmd) == [], (cmd.where, check(cmd))


def test_a_missing_key_is_named():
    (cmd,) = commands_in("```bash\nvineppo plan --config configs/paper/rho1b_math_vineppo.yaml mc.kk=3\n```", "x.md")
    (problem,) = check(cmd)
    assert "mc" in problem and "kk" in problem and "unknown key" in problem


def test_readme_is_a_five_minute_read():
    """README.md holds what a user needs first; the rest lives in docs/ (250 lines at most)."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_readme_install_and_test_commands_are_what_ci_runs():
    """CI (.ci/run) runs README's test command and installs with README's install lines."""
    readme = (ROOT / "README.md").read_text()
    blocks = "\n".join(b for _, b in shell_blocks(readme))
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python -m pytest -q tests(\s|$)", blocks, re.M)
    assert re.search(r"^python -m pytest -q tests$", ci, re.M)
    install = [ln for ln in (ROOT / ".ci" / "install-cpu").read_text().splitlines()
               if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert install and all(ln in blocks.splitlines() for ln in install), install


if __name__ == "__main__":  # list what is checked
    sys.path.insert(0, str(ROOT))
    for c in collect():
        print(c.where, c.kind, " ".join(c.argv), "->", check(c) or "ok")
