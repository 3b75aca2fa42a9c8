"""The demo's RL runs from the SFT start: one process per run (`python -m vineppo.demo`), at most
`parallel` at a time, each training with one torch thread and then evaluating its own
checkpoints; every algorithm of `--algorithms` for every RL seed of `--seeds` (the SFT start is
shared)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from vineppo.config import TrainConfig, critic_lr_for, from_dict, to_dict, validate
from vineppo.demo.config import ALGORITHMS, DemoEval, _say
from vineppo.demo.evaluation import _copy_initial, _evaluated, evaluate_run_checkpoints
from vineppo.demo.report import _quiet_logs, _report


def _run_config(base: TrainConfig, algorithm: str, sft_dir: Path, data_dir: Path, seed_offset: int = 0) -> TrainConfig:
    """The RL run's config: `base` with the algorithm, the SFT start, the demo data, and the RL
    seed `base.seed + seed_offset` (questions, sampling, critic head)."""
    cfg = copy.deepcopy(base)
    cfg.algorithm = algorithm  # type: ignore[assignment]
    cfg.seed = base.seed + seed_offset
    cfg.model.name_or_path = str(sft_dir)
    cfg.model.tokenizer = None
    cfg.model.tiny_init = False
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


def _run_summary(cfg: TrainConfig, run_dir: Path, curve: dict, process_seconds: float) -> dict:
    """Final test pass@1, the evaluated curve, the RL time (the iterations' seconds: generation,
    MC, training, sync) and the whole process's time (with checkpointing and evaluation)."""
    last = max(curve)
    metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {"run_dir": str(run_dir), "iterations": cfg.iterations, "final_iteration": last,
            "test": curve[last]["test"], "curve": curve, "process_seconds": process_seconds,
            "iteration_seconds": sum(float(m.get("seconds", 0.0)) for m in metrics),
            "reward": [(m["iteration"], m.get("reward/mean")) for m in metrics],
            "critic_explained_variance": [(m["iteration"], m["critic/explained_variance"]) for m in metrics
                                          if "critic/explained_variance" in m]}


class _BackgroundRun:
    """An RL run in its own process (`python -m vineppo.demo`, see `_background_main`; its log in
    RUN_DIR.log) that trains and then evaluates its own checkpoints with its own engine. Runs share
    the cores this way: a tiny model's step gains little from a second thread (~1.5x), two runs at
    one thread each gain ~2x."""

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

    def done(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _describe_run(name: str, cfg: TrainConfig) -> None:
    mc = (f"adaptive MC ({cfg.mc.k_min} to {cfg.mc.k_max} continuations per step boundary)" if cfg.mc.adaptive
          else f"K={cfg.mc.k} continuations from every step boundary")
    what = {"vineppo": mc, "ppo": f"critic + GAE (critic lr {critic_lr_for(cfg):g})"}.get(
        cfg.algorithm, f"{cfg.algorithm} group advantages over the {cfg.episodes.samples_per_question} samples")
    warm = (f", {cfg.ppo.critic_warmup_iterations} critic-only iteration(s) first"
            if cfg.algorithm == "ppo" and cfg.ppo.critic_warmup_iterations else "")
    _say(f"{name}: {cfg.iterations} iterations x {cfg.episodes.questions_per_iteration} questions x "
         f"{cfg.episodes.samples_per_question} samples, {what}{warm}, lr {cfg.optim.lr:g} ({cfg.optim.schedule}), "
         f"{cfg.ppo.epochs} epoch(s) of minibatch {cfg.ppo.minibatch_size}, seed {cfg.seed}")


@dataclass
class RunJob:
    #: run directory name under DIR/runs: the algorithm, plus `-seedI` when there are several seeds
    name: str
    algorithm: str
    #: 0 .. seeds-1 (added to the config's seed)
    seed_index: int
    cfg: TrainConfig


def plan_runs(base: TrainConfig, algorithms: list[str], seeds: int, sft_dir: Path, data_dir: Path) -> list[RunJob]:
    """One run per (seed, algorithm), seed-major so each seed's methods run side by side."""
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise ValueError(f"--algorithms: unknown {unknown}; choose among {list(ALGORITHMS)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    return [RunJob(a if seeds == 1 else f"{a}-seed{i}", a, i, _run_config(base, a, sft_dir, data_dir, i))
            for i in range(seeds) for a in algorithms]


class RunQueue:
    """Runs the jobs in background processes, at most `parallel` at once (started as soon as the
    SFT start exists, so they overlap its evaluation and the SFT-continued control)."""

    def __init__(self, jobs: list[RunJob], out: Path, splits: dict[str, list[dict]], data_dir: Path,
                 ev: DemoEval, parallel: int):
        self.pending = list(jobs)
        self.order = [j.name for j in jobs]  # the summaries' order, whichever run ends first
        self.running: dict[str, tuple[RunJob, _BackgroundRun]] = {}
        self.out, self.splits, self.data_dir, self.ev = out, splits, data_dir, ev
        self.parallel = max(1, parallel)
        for job in jobs:
            _describe_run(job.name, job.cfg)

    def fill(self) -> None:
        while self.pending and len(self.running) < self.parallel:
            job = self.pending.pop(0)
            bg = _BackgroundRun(job.cfg, self.out / "runs" / job.name, self.splits, self.data_dir, self.ev)
            self.running[job.name] = (job, bg)
            _say(f"{job.name}: training in its own process (log {bg.log_file})")

    def wait_all(self, sft_results: dict[str, Path], poll_seconds: float = 1.0) -> dict[str, dict]:
        """Start and wait for every job; {name: summary} (see `_run_summary`) in job order."""
        summaries: dict[str, dict] = {}
        try:
            self.fill()
            while self.running:
                for name, (job, bg) in list(self.running.items()):
                    if not bg.done():
                        continue
                    seconds = bg.wait()  # raises with the log's tail if the run failed
                    del self.running[name]
                    summaries[name] = _collect_run(job, bg.run_dir, self.splits, sft_results, seconds)
                    _report(name, summaries[name])
                self.fill()
                if self.running:
                    time.sleep(poll_seconds)
        finally:
            self.kill()
        return {n: summaries[n] for n in self.order if n in summaries}

    def kill(self) -> None:
        for _, bg in self.running.values():
            bg.kill()


def _collect_run(job: RunJob, run_dir: Path, splits: dict, sft_results: dict[str, Path], seconds: float) -> dict:
    """A finished run's summary from the evaluations its process wrote."""
    from vineppo import checkpoint as ckpt

    done = _evaluated(run_dir, splits)
    missing = [p.name for p in ckpt.list_checkpoints(run_dir) if ckpt.verify_checkpoint(p)[0]
               and int(p.name.split("_")[-1]) not in done]
    if missing or not done:
        raise RuntimeError(f"{job.name}: checkpoints {missing or 'all'} were not evaluated; see {run_dir}.log")
    _copy_initial(sft_results, run_dir)
    summary = _run_summary(job.cfg, run_dir, done, seconds)
    summary.update({"algorithm": job.algorithm, "seed_index": job.seed_index, "seed": job.cfg.seed})
    return summary


def _background_main(config_file: str, run_dir: str, eval_file: str) -> int:
    """The second process of `_BackgroundRun`: train, then evaluate every checkpoint (results in
    each checkpoint's eval/ directory, read back by the demo)."""
    from vineppo.console import setup_console

    import torch

    from vineppo.config import load_config
    from vineppo.evaluate import load_tokenizer
    from vineppo.loop import train

    # stdout and stderr already are RUN_DIR.log (see _BackgroundRun): everything goes there
    setup_console(None, verbose=True)
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
