"""The demo's configuration (`configs/demo.yaml`): a TrainConfig for the RL runs plus a `demo:`
section (data, model size, SFT, evaluation), and the small helpers every demo module shares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from vineppo.config import ConfigError, TrainConfig, apply_overrides, from_dict, validate
from vineppo.sft import SFTConfig
from vineppo.tiny import TinyModelConfig

#: the RL methods `demo.algorithms` / `--algorithms` accepts
ALGORITHMS = ("vineppo", "ppo", "grpo", "dr_grpo", "rloo")
#: the demo's config, shipped with the repository
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
#: bump when the SFT recipe changes in a way the cache key does not see
CACHE_VERSION = 1
#: the default demo task (`demo.data.task`)
TASK = "arithmetic"
#: the tasks the demo can generate problems for
DEMO_TASKS = ("arithmetic", "chain")
SUMMARY_FILE = "summary.json"
PLOT_FILE = "demo.png"


@dataclass
class DemoData:
    #: which generated problems: "arithmetic" (2-4 operations, one spelling per line) or "chain"
    #: (long chains, two spellings of a commutative line, an exact oracle: vineppo/tasks/chain.py);
    #: it is also the runs' `data.task`
    task: Literal["arithmetic", "chain"] = "arithmetic"
    #: chain: fewest operations per problem
    min_ops: int = 6
    #: chain: most operations per problem
    max_ops: int = 8
    #: seed of the problem generator (train and test are disjoint by computation)
    seed: int = 0
    #: generated training problems (SFT, RL and the validation carve draw from them)
    train_problems: int = 20000
    #: generated test problems
    test_problems: int = 200


@dataclass
class DemoEval:
    #: samples per problem (the paper: 16)
    n_samples: int = 8
    #: sampling temperature
    temperature: float = 0.35
    #: nucleus sampling threshold
    top_p: float = 0.9
    #: response budget in tokens
    max_new_tokens: int = 64
    #: sampling seed
    seed: int = 42
    #: also evaluate on the validation carve (compare selects checkpoints on it)
    validation: bool = True


@dataclass
class DemoSFTStop:
    """Stop SFT at a target accuracy instead of a fixed step count. A tiny model's SFT curve on
    this task is a cliff (measured: ~10 % to ~60 % within ~150 steps), so a step count that
    gives a mediocre start on one machine can give a strong one on another (float reductions differ
    with thread counts). The check is greedy pass@1 on validation problems (held out from SFT and
    RL, never the test set)."""
    #: stop once greedy validation pass@1 reaches this (null: always run sft.max_steps)
    validation_pass: float | None = 0.45
    #: first check after this many steps, then every `every` steps
    min_steps: int = 400
    #: check every N steps after min_steps
    every: int = 25
    #: how many validation problems the check uses (the first ones of the carve)
    problems: int = 100
    #: response budget of the greedy check, in tokens
    max_new_tokens: int = 64


@dataclass
class DemoControl:
    """A control where no gap between the methods is expected: short chains of the same task, from
    the same SFT start (whose SFT data then includes the control's train problems), each method of
    `demo.algorithms` for each seed, reported under `control` in summary.json."""
    #: run the control
    enabled: bool = False
    #: fewest operations per control problem
    min_ops: int = 1
    #: most operations per control problem
    max_ops: int = 2
    #: generated control train problems (added to the SFT data; the control's RL draws from them)
    train_problems: int = 2000
    #: generated control test problems
    test_problems: int = 200


@dataclass
class DemoSettings:
    #: the generated arithmetic problems
    data: DemoData = field(default_factory=DemoData)
    #: the tiny Llama's shape
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    #: the SFT start's recipe (`vineppo sft`'s loop)
    sft: SFTConfig = field(default_factory=SFTConfig)
    #: when SFT stops: a validation accuracy, checked every few steps
    sft_stop: DemoSFTStop = field(default_factory=DemoSFTStop)
    #: how checkpoints are evaluated
    eval: DemoEval = field(default_factory=DemoEval)
    #: the short-chain control (chain task only)
    control: DemoControl = field(default_factory=DemoControl)
    #: torch intra-op threads for the SFT start (and the SFT-continued control): a fixed number
    #: keeps the SFT start the same on every machine (float reductions depend on the thread
    #: count); null = torch's default, "auto" = time a training step with 1 thread and with all
    #: cores and keep the faster (faster on a busy machine, but the start then depends on it).
    #: The RL runs always train with one thread each, in their own processes.
    torch_threads: int | Literal["auto"] | None = 2
    #: how many RL runs train at once (one process each): true = 2 on a machine with >= 2 cores,
    #: false = one at a time, "auto" = true when the machine has >= 2 cores
    parallel_runs: bool | Literal["auto"] = "auto"
    #: the RL methods (rows of the table): vineppo, ppo, grpo, dr_grpo, rloo
    algorithms: list[str] = field(default_factory=lambda: ["vineppo", "ppo"])
    #: RL seeds per method (config seed + 0 .. seeds-1); the SFT start is shared
    seeds: int = 1
    #: the "SFT continued" control: the SFT start trained this many more SFT steps; null = as many
    #: optimizer steps as each RL run takes (iterations x epochs x episodes / minibatch); 0 = off
    sft_continued_steps: int | None = None
    #: where the SFT start and its evaluation are cached; null = $VINEPPO_CACHE_DIR, else
    #: ~/.cache/vineppo
    cache_dir: str | None = None


@dataclass
class DemoConfig:
    demo: DemoSettings
    #: the RL runs' config; `algorithm`, `model.name_or_path` and `data.source` are set per run
    train: TrainConfig
    path: Path | None = None


def load_demo_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DemoConfig:
    """Read the demo YAML (default `configs/demo.yaml`), apply `key=value` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"demo config not found: {path} (pass --config FILE)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = apply_overrides(data, list(overrides))
    demo_raw = data.pop("demo", None) or {}
    demo = from_dict(DemoSettings, demo_raw, where=f"{path}: demo")
    data.setdefault("model", {})
    if not data["model"].get("name_or_path"):
        data["model"]["name_or_path"] = "<demo SFT start>"  # filled in by run_demo
    data_section = data.setdefault("data", {})
    if data_section.get("task") not in (None, demo.data.task):
        raise ConfigError(f"{path}: data.task is {data_section['task']!r} but demo.data.task is {demo.data.task!r}; "
                          "the demo's task is demo.data.task (drop data.task or make them equal)")
    data_section["task"] = demo.data.task
    train = from_dict(TrainConfig, data, where=str(path))
    validate(train)
    if demo.eval.n_samples < 1:
        raise ConfigError(f"{path}: demo.eval.n_samples must be >= 1")
    if demo.sft.max_steps is None:
        raise ConfigError(f"{path}: demo.sft.max_steps is required (the demo's SFT is capped by step count)")
    stop = demo.sft_stop
    if stop.validation_pass is not None:
        if not 0 < stop.validation_pass <= 1:
            raise ConfigError(f"{path}: demo.sft_stop.validation_pass must be in (0, 1] or null, got {stop.validation_pass}")
        if not train.data.validation_size:
            raise ConfigError(f"{path}: demo.sft_stop needs validation problems: set data.validation_size > 0 "
                              "or demo.sft_stop.validation_pass: null")
        if stop.every < 1 or stop.problems < 1:
            raise ConfigError(f"{path}: demo.sft_stop.every and .problems must be >= 1")
    d = demo.data
    if d.task not in DEMO_TASKS:
        raise ConfigError(f"{path}: demo.data.task {d.task!r}: choose among {list(DEMO_TASKS)}")
    if not 1 <= d.min_ops <= d.max_ops:
        raise ConfigError(f"{path}: demo.data: need 1 <= min_ops <= max_ops, got {d.min_ops}..{d.max_ops}")
    c = demo.control
    if c.enabled:
        if d.task != "chain":
            raise ConfigError(f"{path}: demo.control needs demo.data.task: chain")
        if not 1 <= c.min_ops <= c.max_ops:
            raise ConfigError(f"{path}: demo.control: need 1 <= min_ops <= max_ops, got {c.min_ops}..{c.max_ops}")
        if c.train_problems < 1 or c.test_problems < 1:
            raise ConfigError(f"{path}: demo.control.train_problems and .test_problems must be >= 1")
    bad = [a for a in demo.algorithms if a not in ALGORITHMS]
    if bad or not demo.algorithms:
        raise ConfigError(f"{path}: demo.algorithms {demo.algorithms}: choose among {list(ALGORITHMS)}")
    if demo.seeds < 1:
        raise ConfigError(f"{path}: demo.seeds must be >= 1, got {demo.seeds}")
    if demo.sft_continued_steps is not None and demo.sft_continued_steps < 0:
        raise ConfigError(f"{path}: demo.sft_continued_steps must be >= 0 or null")
    return DemoConfig(demo, train, path)


# ----------------------------------------------------------------------------- helpers


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _fmt_seconds(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def code_fingerprint() -> str:
    """The package version and a hash of every source file of the `vineppo` package. Part of every
    demo cache key (SFT start, its evaluation), so a cached number is reused only by the code that
    produced it: any change to training, grading or evaluation code retrains and re-evaluates."""
    import vineppo

    root = Path(vineppo.__file__).resolve().parent
    h = hashlib.sha256(f"vineppo {vineppo.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


