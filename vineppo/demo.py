"""`vineppo demo`: the embedded default, offline on CPU.

1. data: the synthetic arithmetic task (`vineppo.tasks.arithmetic`), train/test JSONL written to
   DIR/data (a validation set is carved from train by `data.validation_size`, as in training);
2. a tiny Llama + byte-level BPE tokenizer built locally and fine-tuned (SFT) to a mediocre
   start — cached under the cache dir keyed by everything that determines it, so a second run
   skips it (and its evaluation);
3. VinePPO iterations, then PPO (critic + GAE) for the same number of iterations, both from the
   SFT start with the same seed (same questions every iteration), via `vineppo.loop.train`;
4. evaluation of the SFT start and of every saved checkpoint of both runs on the held-out test
   problems (and the validation carve), `vineppo.compare`'s table and plots, the demo's own plot
   (DIR/demo.png), and DIR/summary.json = {"sft", "ppo", "vineppo", "seconds"} (pass@1 in %).

Every hyper-parameter is in `configs/demo.yaml`: the TrainConfig of the RL runs plus a `demo:`
section (data, model size, SFT, evaluation). `key=value` overrides apply to both (`demo.*` keys to
the demo section), e.g. `vineppo demo iterations=2 demo.sft.max_steps=50`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from vineppo.config import ConfigError, TrainConfig, apply_overrides, from_dict, to_dict, validate
from vineppo.sft import SFTConfig
from vineppo.tiny import TinyModelConfig

log = logging.getLogger(__name__)

#: the demo's config, shipped with the repository
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
#: bump when the SFT recipe changes in a way the cache key does not see
CACHE_VERSION = 1
TASK = "arithmetic"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "demo.png"


@dataclass
class DemoData:
    #: seed of the problem generator (train and test are disjoint by computation)
    seed: int = 0
    train_problems: int = 20000
    test_problems: int = 200


@dataclass
class DemoEval:
    n_samples: int = 8
    temperature: float = 0.35
    top_p: float = 0.9
    max_new_tokens: int = 64
    seed: int = 42
    #: also evaluate on the validation carve (compare selects checkpoints on it)
    validation: bool = True


@dataclass
class DemoSFTStop:
    """Stop SFT at a target accuracy instead of a fixed step count. A tiny model's SFT curve on
    this task is a cliff (shared notes: ~10 % to ~60 % within ~150 steps), so a step count that
    gives a mediocre start on one machine can give a strong one on another (float reductions differ
    with thread counts). The check is greedy pass@1 on validation problems (held out from SFT and
    RL, never the test set)."""
    #: stop once greedy validation pass@1 reaches this (null: always run sft.max_steps)
    validation_pass: float | None = 0.45
    #: first check after this many steps, then every `every` steps
    min_steps: int = 400
    every: int = 25
    #: how many validation problems the check uses (the first ones of the carve)
    problems: int = 100


@dataclass
class DemoSettings:
    data: DemoData = field(default_factory=DemoData)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sft_stop: DemoSFTStop = field(default_factory=DemoSFTStop)
    eval: DemoEval = field(default_factory=DemoEval)
    #: torch intra-op threads for SFT and RL training: a number, null (torch's default) or "auto":
    #: time a few training steps of the tiny model with 1 thread and with all cores, keep the
    #: faster. On an idle 2-core machine 2 threads are ~1.8x faster; when other processes keep a
    #: core busy, 2 threads spin-wait and are 2-5x *slower* than 1.
    torch_threads: int | Literal["auto"] | None = "auto"
    #: train PPO in a second process while VinePPO trains (one torch thread each): true, false, or
    #: "auto" (when the machine has at least 2 cores)
    parallel_runs: bool | Literal["auto"] = "auto"
    #: where the SFT start is cached (null: $VINEPPO_CACHE_DIR, else ~/.cache/vineppo)
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
    data.setdefault("data", {})["task"] = TASK
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
    return DemoConfig(demo, train, path)


# ----------------------------------------------------------------------------- helpers


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _fmt_seconds(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("VINEPPO_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vineppo"


def pick_torch_threads(model_cfg: TinyModelConfig, *, seq_len: int = 72, batch: int = 32,
                       repeats: int = 3) -> tuple[int, dict[int, float]]:
    """The faster of 1 thread and all cores for a forward + backward pass of the tiny model, and
    the seconds measured per pass. All cores must win by 15 % (contention tends to grow)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    most = max(1, min(os.cpu_count() or 1, torch.get_num_threads()))
    if most == 1:
        return 1, {}
    config = LlamaConfig(vocab_size=512, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.intermediate_size,
                         num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
                         num_key_value_heads=model_cfg.num_heads, max_position_embeddings=max(seq_len, 64))
    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        ids = torch.randint(0, 512, (batch, seq_len))
    times: dict[int, list[float]] = {1: [], most: []}
    try:
        for _ in range(repeats):
            for n in (1, most):
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                model(input_ids=ids, labels=ids).loss.backward()
                times[n].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(before)
    best = {n: min(v) for n, v in times.items()}
    return (most if best[most] < 0.85 * best[1] else 1), best


class _TorchThreads:
    def __init__(self, n: int | None):
        self.n = n
        self.before: int | None = None

    def __enter__(self):
        import torch

        if self.n:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)


# ----------------------------------------------------------------------------- SFT start (cached)


def sft_cache_key(demo: DemoSettings, sft_rows: Sequence[dict], stop_rows: Sequence[dict] = ()) -> str:
    """Everything that determines the SFT start: the rows it is trained on, model size, SFT recipe,
    and the stopping rule with the problems it checks."""
    return _sha({"version": CACHE_VERSION, "rows": _sha(list(sft_rows)), "model": asdict(demo.model),
                 "sft": asdict(demo.sft), "stop": asdict(demo.sft_stop),
                 "stop_rows": _sha(list(stop_rows)[: demo.sft_stop.problems])})[:16]


def greedy_pass_rate(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 64) -> float:
    """Greedy pass@1 of an in-memory model on `rows` (transformers engine; used to stop SFT)."""
    from vineppo.engine.hf import HFEngine
    from vineppo.evaluate import evaluate_model
    from vineppo.tasks import get_task

    engine = HFEngine(model, tokenizer, max_batch_size=len(rows), progress=False)
    try:
        summary, _ = evaluate_model(engine, tokenizer, get_task(TASK), rows, n_samples=1, temperature=0.0,
                                    max_new_tokens=max_new_tokens, progress=False)
    finally:
        engine.close()
    return float(summary["pass@1"])


def ensure_sft_start(demo: DemoSettings, sft_rows: Sequence[dict], cache_root: Path, *,
                     stop_rows: Sequence[dict] = (), progress: bool = False) -> tuple[Path, dict, bool]:
    """(model dir, info, cached): build tokenizer + tiny model, SFT it (to `demo.sft_stop`'s target
    validation accuracy on `stop_rows`, at most `demo.sft.max_steps`), save it under the cache;
    reuse a complete cached copy when the key matches."""
    from vineppo.tasks import get_task

    stop = demo.sft_stop
    check_rows = list(stop_rows)[: stop.problems] if stop.validation_pass is not None else []
    key = sft_cache_key(demo, sft_rows, check_rows)
    final = cache_root / f"demo-sft-{key}"
    info_file = final / "demo_sft.json"
    if info_file.is_file() and (final / "config.json").is_file():
        return final, json.loads(info_file.read_text()), True

    import torch
    from transformers import AutoTokenizer

    from vineppo.sft import sft
    from vineppo.tiny import build_model, build_tokenizer

    task = get_task(TASK)
    t0 = time.perf_counter()
    texts = [task.prompt(r) + task.sft_target(r) for r in sft_rows]
    tokenizer = build_tokenizer(texts, demo.model.vocab_size)
    model = build_model(tokenizer, demo.model, seed=demo.sft.seed)
    n_params = sum(p.numel() for p in model.parameters())
    _say(f"SFT: tiny Llama ({n_params / 1e6:.2f}M parameters, hidden {demo.model.hidden_size}, "
         f"{demo.model.num_layers} layers, vocab {len(tokenizer)}), {demo.sft.max_steps} steps x batch "
         f"{demo.sft.batch_size}, lr {demo.sft.lr:g} on {len(sft_rows)} problems")
    tmp = cache_root / f".tmp-demo-sft-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checks: list[tuple[int, float]] = []

    def should_stop(step: int, loss: float) -> bool:
        if not check_rows or step < stop.min_steps or (step - stop.min_steps) % stop.every:
            return False
        acc = greedy_pass_rate(model, tokenizer, check_rows)
        checks.append((step, acc))
        _say(f"  SFT step {step}: loss {loss:.3f}, greedy validation pass@1 {100 * acc:.0f}%")
        return acc >= stop.validation_pass

    try:
        stats = sft(model, tokenizer, task, sft_rows, demo.sft, progress=progress, out_dir=tmp,
                    should_stop=should_stop)
        # The tokenizer trap (shared notes): every loader must give the same ids as training did.
        probe = task.prompt(sft_rows[0]) + task.sft_target(sft_rows[0])
        reloaded = AutoTokenizer.from_pretrained(tmp)
        if reloaded(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
            raise RuntimeError("the saved tokenizer does not reload to the same token ids")
        info = {"key": key, "steps": stats["steps"], "final_loss": stats["final_loss"],
                "validation_checks": checks, "stopped_at_target": bool(checks) and checks[-1][1] >= (stop.validation_pass or 0),
                "seconds": time.perf_counter() - t0, "parameters": n_params, "vocab": len(tokenizer),
                "rows": len(sft_rows), "model": asdict(demo.model), "sft": asdict(demo.sft),
                "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "demo_sft.json").write_text(json.dumps(info, indent=1) + "\n")
        if final.exists():  # an incomplete copy (killed run)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, info, False


# ----------------------------------------------------------------------------- evaluation


def _eval_kwargs(ev: DemoEval, max_sequence_length: int) -> dict:
    return dict(n_samples=ev.n_samples, temperature=ev.temperature, top_p=ev.top_p,
                max_new_tokens=ev.max_new_tokens, seed=ev.seed, max_sequence_length=max_sequence_length)


def _evaluate(model_dir: Path, out_dir: Path, rows: list[dict], split: str, data_dir: Path, ev: DemoEval,
              train_cfg: TrainConfig, *, engine=None, tokenizer=None, iteration: int | None = None) -> dict:
    from vineppo.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(model_dir, TASK, split, data_source=str(data_dir), out_dir=out_dir,
                               engine_cfg=train_cfg.engine, rows=rows, engine=engine, tokenizer=tokenizer,
                               iteration=iteration, progress=False, validation_size=train_cfg.data.validation_size,
                               validation_seed=train_cfg.data.validation_seed,
                               **_eval_kwargs(ev, train_cfg.sampling.max_sequence_length))


def _cached_results(path: Path, wanted: dict) -> dict | None:
    from vineppo.evaluate import read_results

    res = read_results(path)
    if res is None or any(res.get(k) != v for k, v in wanted.items()):
        return None
    return res


def evaluate_sft(sft_dir: Path, splits: dict[str, list[dict]], data_dir: Path, ev: DemoEval,
                 train_cfg: TrainConfig) -> tuple[dict[str, Path], bool]:
    """Evaluate the SFT start on each split, cached inside its directory (keyed by the rows and the
    evaluation settings). Returns {split: results dir}, whether everything came from the cache."""
    from vineppo.engine.factory import resolve_backend
    from vineppo.evaluate import load_tokenizer

    backend = resolve_backend(train_cfg.engine)
    dirs, todo = {}, []
    for split, rows in splits.items():
        key = _sha({"rows": _sha(rows), "eval": asdict(ev), "backend": backend,
                    "max_len": train_cfg.sampling.max_sequence_length})[:12]
        d = sft_dir / "demo-eval" / f"{split}-{key}"
        dirs[split] = d
        if _cached_results(d, {"n_samples": ev.n_samples, "seed": ev.seed}) is None:
            todo.append(split)
    if not todo:
        return dirs, True
    from vineppo.engine.factory import make_engine

    tok = load_tokenizer(sft_dir)
    engine = make_engine(train_cfg.engine, model_path=str(sft_dir), tokenizer=tok, seed=ev.seed,
                         max_model_len=train_cfg.sampling.max_sequence_length, progress=False)
    try:
        for split in todo:
            _evaluate(sft_dir, dirs[split], splits[split], split, data_dir, ev, train_cfg, engine=engine,
                      tokenizer=tok, iteration=0)
    finally:
        engine.close()
    return dirs, False


def _copy_initial(results_dirs: dict[str, Path], run_dir: Path) -> None:
    """Put the SFT start's results where `vineppo compare` looks for iteration 0."""
    from vineppo.evaluate import INITIAL_DIR, eval_dir

    for split, src in results_dirs.items():
        dst = eval_dir(run_dir / INITIAL_DIR, split)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def evaluate_run_checkpoints(run_dir: Path, engine, tokenizer, splits: dict[str, list[dict]], data_dir: Path,
                             ev: DemoEval, train_cfg: TrainConfig,
                             done: dict[int, dict[str, float]] | None = None) -> dict[int, dict[str, float]]:
    """Evaluate the run's complete checkpoints that are not in `done` with an open rollout engine
    (each checkpoint's weights are pushed into it in place); returns `done` updated,
    {iteration: {split: pass@1}}. The run may still be training (checkpoints appear atomically)."""
    from vineppo import checkpoint as ckpt
    from vineppo.evaluate import checkpoint_iteration, eval_dir, load_hf_weights

    out: dict[int, dict[str, float]] = {} if done is None else done
    for path in ckpt.list_checkpoints(run_dir):
        it = checkpoint_iteration(path)
        if it in out or not ckpt.verify_checkpoint(path)[0]:
            continue
        weights = load_hf_weights(path)
        if weights is None:
            raise RuntimeError(f"{path} has no safetensors weights")
        engine.update_weights(weights)
        out[it] = {}
        for split, rows in splits.items():
            res = _evaluate(path, eval_dir(path, split), rows, split, data_dir, ev, train_cfg, engine=engine,
                            tokenizer=tokenizer, iteration=it)
            out[it][split] = float(res["pass@1"])
    return out


# ----------------------------------------------------------------------------- runs


def _run_config(base: TrainConfig, algorithm: str, sft_dir: Path, data_dir: Path) -> TrainConfig:
    cfg = copy.deepcopy(base)
    cfg.algorithm = algorithm  # type: ignore[assignment]
    cfg.model.name_or_path = str(sft_dir)
    cfg.model.tokenizer = None
    cfg.model.tiny_init = False
    cfg.data.task = TASK  # type: ignore[assignment]
    cfg.data.source = str(data_dir)
    validate(cfg)
    return cfg


def _fresh_run_dir(run_dir: Path) -> None:
    """The demo owns DIR/runs/*: a previous demo's run there is replaced."""
    if not run_dir.exists():
        return
    if not ((run_dir / "config.yaml").exists() or (run_dir / "metrics.jsonl").exists()
            or not any(run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} exists and is not a vineppo run; choose another --output-dir")
    _say(f"replacing the previous demo run in {run_dir}")
    shutil.rmtree(run_dir)


def _run_summary(cfg: TrainConfig, run_dir: Path, curve: dict, t_train: float, t_eval: float) -> dict:
    last = max(curve)
    metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {"run_dir": str(run_dir), "iterations": cfg.iterations, "final_iteration": last,
            "test": curve[last]["test"], "curve": curve, "train_seconds": t_train, "eval_seconds": t_eval,
            "iteration_seconds": sum(float(m.get("seconds", 0.0)) for m in metrics),
            "reward": [(m["iteration"], m.get("reward/mean")) for m in metrics]}


def _evaluate_run(cfg: TrainConfig, run_dir: Path, engine, splits, data_dir, ev, sft_results,
                  t_train: float, done: dict | None = None, t_eval_before: float = 0.0) -> dict:
    from vineppo.evaluate import load_tokenizer

    tok = load_tokenizer(cfg.model.name_or_path)
    t1 = time.perf_counter()
    curve = evaluate_run_checkpoints(run_dir, engine, tok, splits, data_dir, ev, cfg, done)
    _copy_initial(sft_results, run_dir)
    return _run_summary(cfg, run_dir, curve, t_train, t_eval_before + time.perf_counter() - t1)


class _BackgroundRun:
    """An RL run in a second process (`python -m vineppo.demo`, see `_background_main`; its log in
    RUN_DIR.log) that trains and then evaluates its own checkpoints with its own engine, so the two
    runs share the cores: a tiny model's step gains little from a second thread (~1.5x), two runs
    at one thread each gain ~2x."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, splits: dict[str, list[dict]], data_dir: Path,
                 ev: DemoEval):
        import subprocess
        import sys

        _fresh_run_dir(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.cfg, self.run_dir = cfg, run_dir
        self.config_file = run_dir.parent / f"{run_dir.name}.config.yaml"
        self.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.eval_file = run_dir.parent / f"{run_dir.name}.eval.json"
        self.eval_file.write_text(json.dumps({"splits": splits, "data_dir": str(data_dir), "eval": asdict(ev)}))
        self.log_file = run_dir.parent / f"{run_dir.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.t0 = time.perf_counter()
        with open(self.log_file, "w") as log_fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vineppo.demo", str(self.config_file), str(run_dir), str(self.eval_file)],
                stdout=log_fh, stderr=subprocess.STDOUT, env=env)

    def wait(self) -> float:
        """Block until the run ends; its training seconds. Raises with the log's tail on failure."""
        rc = self.proc.wait()
        if rc != 0:
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-25:])
            raise RuntimeError(f"the {self.cfg.algorithm} run failed (exit code {rc}); "
                               f"log {self.log_file}:\n{tail}")
        return time.perf_counter() - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _describe_run(algo: str, cfg: TrainConfig) -> None:
    what = (f"K={cfg.mc.k} continuations from every step boundary" if algo == "vineppo" else "critic + GAE")
    _say(f"{algo}: {cfg.iterations} iterations x {cfg.episodes.questions_per_iteration} questions x "
         f"{cfg.episodes.samples_per_question} samples, {what}, lr {cfg.optim.lr:g} ({cfg.optim.schedule}), "
         f"{cfg.ppo.epochs} epoch(s) of minibatch {cfg.ppo.minibatch_size}")


def _start_background_runs(base: TrainConfig, algos: list[str], sft_dir: Path, out: Path, data_dir: Path,
                           splits: dict[str, list[dict]], ev: DemoEval) -> dict[str, _BackgroundRun]:
    """Start every run but the first in its own process (called as soon as the SFT start exists,
    so their start-up overlaps the SFT evaluation)."""
    background = {}
    for a in algos[1:]:
        cfg = _run_config(base, a, sft_dir, data_dir)
        _describe_run(a, cfg)
        background[a] = _BackgroundRun(cfg, out / "runs" / a, splits, data_dir, ev)
        _say(f"{a}: training in a second process (log {background[a].log_file})")
    return background


def _background_main(config_file: str, run_dir: str, eval_file: str) -> int:
    """The second process of `_BackgroundRun`: train, then evaluate every checkpoint (results in
    each checkpoint's eval/ directory, read back by the demo)."""
    import torch

    from vineppo.config import load_config
    from vineppo.evaluate import load_tokenizer
    from vineppo.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    _quiet_logs()
    cfg = load_config(config_file)
    spec = json.loads(Path(eval_file).read_text())
    ev = from_dict(DemoEval, spec["eval"], where=eval_file)
    res = train(cfg, Path(run_dir), keep_engine=True)
    try:
        done = evaluate_run_checkpoints(Path(run_dir), res.engine, load_tokenizer(cfg.model.name_or_path),
                                        spec["splits"], Path(spec["data_dir"]), ev, cfg)
    finally:
        res.engine.close()
    print(f"evaluated: {json.dumps(done)}", flush=True)
    return 0


def _evaluated(run_dir: Path, splits: dict) -> dict[int, dict[str, float]]:
    """{iteration: {split: pass@1}} of the run's checkpoints evaluated on every split."""
    from vineppo import checkpoint as ckpt
    from vineppo.evaluate import checkpoint_iteration, eval_dir, read_results

    out = {}
    for path in ckpt.list_checkpoints(run_dir):
        res = {s: read_results(eval_dir(path, s)) for s in splits}
        if all(r is not None for r in res.values()):
            out[checkpoint_iteration(path)] = {s: float(r["pass@1"]) for s, r in res.items()}
    return out


def _collect_background(bg: _BackgroundRun, cfg: TrainConfig, engine, splits, data_dir, ev, sft_results) -> dict:
    """Wait for a background run (it evaluates its own checkpoints); evaluate any it left out."""
    t_train = bg.wait()
    t1 = time.perf_counter()
    done = _evaluated(bg.run_dir, splits)
    return _evaluate_run(cfg, bg.run_dir, engine, splits, data_dir, ev, sft_results, t_train, done,
                         time.perf_counter() - t1)


def _train_runs(base: TrainConfig, algos: list[str], sft_dir: Path, out: Path, splits, data_dir, ev,
                sft_results, background: dict[str, _BackgroundRun]) -> dict[str, dict]:
    """Train and evaluate each algorithm's run from the SFT start. Runs in `background` are already
    training in their own processes; the others train here one after the other. Every checkpoint
    is evaluated with the rollout engine of the run trained here (weights pushed in place), the
    background runs' checkpoints as soon as they are written."""
    from vineppo.loop import train

    cfgs = {a: _run_config(base, a, sft_dir, data_dir) for a in algos}
    first, rest = algos[0], algos[1:]
    _describe_run(first, cfgs[first])
    for a in rest:
        if a not in background:
            _describe_run(a, cfgs[a])
    runs: dict[str, dict] = {}
    res = None
    try:
        _fresh_run_dir(out / "runs" / first)
        t0 = time.perf_counter()
        res = train(cfgs[first], out / "runs" / first, keep_engine=True)
        t_train = time.perf_counter() - t0
        try:
            runs[first] = _evaluate_run(cfgs[first], out / "runs" / first, res.engine, splits, data_dir, ev,
                                        sft_results, t_train)
            _report(first, runs[first])
            for a in rest:
                if a in background:
                    runs[a] = _collect_background(background[a], cfgs[a], res.engine, splits, data_dir, ev,
                                                  sft_results)
                else:
                    res.engine.close()
                    _fresh_run_dir(out / "runs" / a)
                    t0 = time.perf_counter()
                    res = train(cfgs[a], out / "runs" / a, keep_engine=True)
                    runs[a] = _evaluate_run(cfgs[a], out / "runs" / a, res.engine, splits, data_dir, ev,
                                            sft_results, time.perf_counter() - t0)
                _report(a, runs[a])
        finally:
            if res is not None and res.engine is not None:
                res.engine.close()
    finally:
        for b in background.values():
            b.kill()
    return runs


def _report(algo: str, r: dict) -> None:
    _say(f"{algo}: test pass@1 {100 * r['test']:.1f}% after {r['final_iteration']} iterations "
         f"(training {_fmt_seconds(r['train_seconds'])}, evaluation {_fmt_seconds(r['eval_seconds'])})")


# ----------------------------------------------------------------------------- outputs


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_demo(path: Path, sft_test: float, runs: dict[str, dict], ev: DemoEval, n_test: int) -> Path:
    """Left: held-out test pass@1 (%) vs iteration per method (iteration 0 = the SFT start), the SFT
    level dashed. Right: train reward (mean over the iteration's episodes, T = sampling T) vs
    iteration, raw faint and moving average solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"vineppo": "C0", "ppo": "C1"}
    names = {"vineppo": "VinePPO", "ppo": "PPO"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for algo, r in runs.items():
        pts = [(0, 100 * sft_test)] + sorted((it, 100 * v["test"]) for it, v in r["curve"].items())
        a.plot(*zip(*pts), "-o", color=colors[algo], label=f"{names[algo]} (final {100 * r['test']:.1f}%)")
        rew = [(it, v) for it, v in r["reward"] if v is not None]
        if rew:
            its, vals = zip(*rew)
            b.plot(its, vals, color=colors[algo], alpha=0.25, linewidth=0.8)
            b.plot(its, _moving_average(list(vals), 3), color=colors[algo], label=names[algo])
    a.axhline(100 * sft_test, color="gray", linestyle="--", label=f"SFT start {100 * sft_test:.1f}%")
    a.set_title(f"Held-out test pass@1 ({n_test} problems x {ev.n_samples} samples, T={ev.temperature})", fontsize=9)
    a.set_xlabel("RL iteration")
    a.set_ylabel("pass@1 (%)")
    b.set_title("Train reward (moving average of 3 iterations)", fontsize=9)
    b.set_xlabel("RL iteration")
    b.set_ylabel("mean reward (train accuracy, sampling T)")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("vineppo demo: synthetic arithmetic, tiny Llama on CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def final_table(sft_test: float, runs: dict[str, dict], sft_note: str) -> str:
    rows = [("SFT start", 100 * sft_test, None, "—", sft_note)]
    for algo, name in (("ppo", "PPO"), ("vineppo", "VinePPO")):
        if algo in runs:
            r = runs[algo]
            rows.append((name, 100 * r["test"], 100 * (r["test"] - sft_test), str(r["final_iteration"]),
                         _fmt_seconds(r["iteration_seconds"])))
    lines = [f"{'model':<10} {'test pass@1':>11} {'vs SFT':>8} {'iterations':>10}  {'RL time':<12}"]
    for name, p, d, its, t in rows:
        delta = "—" if d is None else f"{d:+.1f}"
        lines.append(f"{name:<10} {p:>10.1f}% {delta:>8} {its:>10}  {t:<12}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point


def _quiet_logs() -> None:
    """Keep the demo's console readable: the loop's one line per iteration and the demo's own
    lines; per-call engine, evaluation and checkpoint logs are kept at WARNING (they are in the
    run directories anyway). Explicit user settings (e.g. VLLM_LOGGING_LEVEL) win."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("accelerate", "vineppo.engine", "vineppo.evaluate", "vineppo.data", "vineppo.compare"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - older transformers
        pass



def run_demo(output_dir: str | Path = "vineppo-demo", *, config_path: str | Path | None = None,
             overrides: Sequence[str] = (), include_ppo: bool = True, cache_dir: str | Path | None = None,
             progress: bool = False, compare: bool = True) -> dict:
    """Run the whole demo (see the module docstring); returns the summary dict with extra details
    under "details". Pass@1 values are in percent on the demo's held-out test problems."""
    t_start = time.perf_counter()
    dc = load_demo_config(config_path, overrides)
    demo, base = dc.demo, dc.train
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cache_dir or demo.cache_dir or default_cache_dir()).expanduser().resolve()
    cache_root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _say(f"output: {out}  (config {dc.path}; load average {load:.2f} on {os.cpu_count()} CPUs)")
    _quiet_logs()

    threads = demo.torch_threads
    if threads == "auto":
        threads, timing = pick_torch_threads(demo.model)
        _say(f"torch threads for SFT and training: {threads} (a tiny-model step: "
             + ", ".join(f"{n} thread(s) {t:.2f}s" for n, t in timing.items()) + "; set demo.torch_threads to fix it)")
    with _TorchThreads(threads):
        # 1. data
        from vineppo.data import load_rows
        from vineppo.tasks.arithmetic import make_splits

        train_rows, test_rows = make_splits(demo.data.train_problems, demo.data.test_problems, demo.data.seed)
        data_dir = out / "data"
        _write_jsonl(data_dir / "train.jsonl", train_rows)
        _write_jsonl(data_dir / "test.jsonl", test_rows)
        vsize = base.data.validation_size or 0
        rl_rows = load_rows(TASK, "train", data_dir, validation_size=vsize, seed=base.data.validation_seed)
        val_rows = (load_rows(TASK, "validation", data_dir, validation_size=vsize, seed=base.data.validation_seed)
                    if vsize > 0 else [])
        splits = {"test": test_rows}
        if demo.eval.validation and val_rows:
            splits["validation"] = val_rows
        _say(f"data: {len(train_rows)} train problems ({vsize} held out as validation), {len(test_rows)} test "
             f"problems, disjoint by computation -> {data_dir}")

        # 2. SFT start
        t0 = time.perf_counter()
        sft_dir, sft_info, sft_cached = ensure_sft_start(demo, rl_rows, cache_root, stop_rows=val_rows,
                                                         progress=progress)
        t_sft = time.perf_counter() - t0
        _say(f"SFT start {'reused from the cache' if sft_cached else 'trained and cached'}: {sft_dir} "
             f"({sft_info['steps']} steps, final loss {sft_info['final_loss']:.3f}"
             f"{'' if sft_cached else f', {_fmt_seconds(t_sft)}'})")

        # RL runs in other processes start now: their start-up overlaps the SFT evaluation
        algos = ["vineppo"] + (["ppo"] if include_ppo else [])
        if not include_ppo:
            _fresh_run_dir(out / "runs" / "ppo")  # no stale PPO run from an earlier demo
        parallel = demo.parallel_runs
        if parallel == "auto":
            parallel = (os.cpu_count() or 1) >= 2
        background = (_start_background_runs(base, algos, sft_dir, out, data_dir, splits, demo.eval)
                      if parallel else {})
        try:
            # 3. evaluate it
            t0 = time.perf_counter()
            sft_results, eval_cached = evaluate_sft(sft_dir, splits, data_dir, demo.eval,
                                                    _run_config(base, "vineppo", sft_dir, data_dir))
            from vineppo.evaluate import read_results

            sft_pass = {s: float(read_results(d)["pass@1"]) for s, d in sft_results.items()}
            _say(f"SFT start test pass@1 {100 * sft_pass['test']:.1f}% ({len(test_rows)} problems x "
                 f"{demo.eval.n_samples} samples, T={demo.eval.temperature}, top_p={demo.eval.top_p})"
                 f"{' (cached)' if eval_cached else f', {_fmt_seconds(time.perf_counter() - t0)}'}")

            # 4. RL runs
            with _TorchThreads(1 if background else None):
                runs = _train_runs(base, algos, sft_dir, out, splits, data_dir, demo.eval, sft_results,
                                   background)
        finally:
            for b in background.values():
                b.kill()

    # 5. compare table, plots, summary
    if compare:
        from vineppo.compare import compare as compare_runs

        _say("vineppo compare:")
        compare_runs([out / "runs" / a for a in algos], out / "compare", labels=algos)
    plot = plot_demo(out / PLOT_FILE, sft_pass["test"], runs, demo.eval, len(test_rows))
    seconds = time.perf_counter() - t_start
    summary = {"sft": round(100 * sft_pass["test"], 2),
               "ppo": round(100 * runs["ppo"]["test"], 2) if "ppo" in runs else None,
               "vineppo": round(100 * runs["vineppo"]["test"], 2),
               "seconds": round(seconds, 1)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    details = {"summary": summary, "sft_dir": str(sft_dir), "sft_cached": sft_cached, "sft": sft_info,
               "sft_pass@1": sft_pass, "eval": asdict(demo.eval), "test_problems": len(test_rows),
               "runs": {a: {k: v for k, v in r.items()} for a, r in runs.items()},
               "config": {"demo": asdict(demo), "train": to_dict(base)}, "plot": str(plot),
               "load_average_start": load}
    (out / "demo_details.json").write_text(json.dumps(details, indent=1, default=str) + "\n")
    sft_note = "(cached)" if sft_cached else f"(SFT {_fmt_seconds(t_sft)})"
    print()
    print(f"vineppo demo: held-out test pass@1, {len(test_rows)} problems x {demo.eval.n_samples} samples "
          f"(T={demo.eval.temperature}, top_p={demo.eval.top_p}), final checkpoints")
    print(final_table(sft_pass["test"], runs, sft_note))
    print(f"total {_fmt_seconds(seconds)}; SFT start cached in {sft_dir}")
    print(f"wrote {out / SUMMARY_FILE}, {plot}" + (f", {out / 'compare'}/" if compare else ""), flush=True)
    return {**summary, "details": details}


if __name__ == "__main__":  # the background RL run of `vineppo demo` (see _BackgroundRun)
    import sys

    sys.exit(_background_main(*sys.argv[1:4]))
