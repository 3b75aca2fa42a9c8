"""The demo's RL runs from the SFT start: one trained in this process, the others in background
processes (`python -m vineppo.demo`), each evaluated checkpoint by checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from vineppo.config import TrainConfig, from_dict, to_dict, validate
from vineppo.demo.config import TASK, DemoEval, _say
from vineppo.demo.evaluation import _copy_initial, _evaluated, evaluate_run_checkpoints
from vineppo.demo.report import _quiet_logs, _report


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


