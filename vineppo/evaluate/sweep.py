"""Evaluate checkpoints: one (`evaluate_checkpoint`) or every complete one of a run that lacks results
(`evaluate_run`), with one engine whose weights are replaced between checkpoints."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from vineppo import checkpoint as ckpt
from vineppo.config import EngineConfig
from vineppo.data import DEFAULT_TRAIN_SUBSET_SEED
from vineppo.engine.base import Engine
from vineppo.evaluate.grid import check_grid, declared_grid, on_grid, save_interval
from vineppo.evaluate.parallel import assign, default_workers, device_groups, run_shares, visible_devices
from vineppo.evaluate.results import eval_dir, read_results, write_results
from vineppo.evaluate.runs import (
    DataSpec,
    _section,
    check_model_dir,
    checkpoint_iteration,
    data_spec,
    engine_config,
    grading_mode,
    load_eval_rows,
    load_tokenizer,
    read_run_config,
)
from vineppo.evaluate.sampling import evaluate_model
from vineppo.evaluate.settings import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_N_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    INITIAL_DIR,
    EvalError,
    EvalSettings,
    _for_split,
    _mismatch,
    _settings_dict,
)
from vineppo.tasks.base import STOP_STRINGS, Row

log = logging.getLogger("vineppo.evaluate")


def _backend_name(engine: Engine) -> str:
    return {"HFEngine": "hf", "VLLMEngine": "vllm"}.get(type(engine).__name__, type(engine).__name__)


def evaluate_checkpoint(checkpoint_dir: str | Path, task_name: str, split: str, *,
                        data_source: str | None = None, out_dir: str | Path | None = None,
                        engine_cfg: EngineConfig | None = None,
                        n_samples: int = DEFAULT_N_SAMPLES, temperature: float = DEFAULT_TEMPERATURE,
                        top_p: float = DEFAULT_TOP_P, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                        seed: int = DEFAULT_SEED, max_sequence_length: int | None = None,
                        max_problems: int | None = None, validation_size: int | None = None,
                        validation_seed: int = 42, rows: Sequence[Row] | None = None,
                        engine: Engine | None = None, tokenizer=None, iteration: int | None = None,
                        progress: bool = True, spec: DataSpec | None = None, grading: str = "official",
                        unfinished: str = "grade") -> dict:
    """Evaluate one model directory on `split` of `task_name` and write its files.

    checkpoint_dir: a run checkpoint (`RUN/checkpoints/iter_NNNNNN`, verified against its
        manifest) or any HF model directory; a hub id works with an explicit `out_dir`.
    data_source: directory of JSONL files, or None for the hub (see `vineppo.data.load_rows`).
    out_dir: where results.json / samples.jsonl go (default `<checkpoint_dir>/eval/<split>/`).
    engine_cfg: engine choice and knobs (default: vLLM when installed, else transformers).
    validation_size / validation_seed: the train/validation carve (use the run's, so that
        validation stays held out from training).
    rows / engine / tokenizer: reuse what the caller has already loaded (the engine must hold
        this checkpoint's weights); the engine is then not closed here.
    spec: the run's data spec; its custom fields, answer format and prompt (chat template) are
        used as in training (task_name, data_source and the carve then come from it too).
    grading / unfinished: the grading mode and the rule for unfinished samples (see EvalSettings).
    Returns the results dict written to results.json (summary + what was evaluated).
    """
    settings = EvalSettings(n_samples, temperature, top_p, max_new_tokens, seed, max_sequence_length,
                            grading, unfinished)
    local = Path(checkpoint_dir)
    if local.exists():
        check_model_dir(local)
    elif out_dir is None:
        raise EvalError(f"checkpoint {checkpoint_dir} does not exist locally; pass an output directory to "
                        f"evaluate a hub model")
    from vineppo.prompting import PromptBuilder

    if spec is None:
        spec = DataSpec(task_name, data_source, validation_size, validation_seed)
    if rows is None:
        rows = load_eval_rows(spec, split, max_problems)
    if tokenizer is None:
        tokenizer = load_tokenizer(checkpoint_dir)
    task = spec.make_task(tokenizer, grading=grading)
    chat = spec.prompt is not None and spec.prompt.chat
    if chat:
        from vineppo.prompting import use_end_of_turn_as_eos

        use_end_of_turn_as_eos(tokenizer)
    prompts = PromptBuilder(tokenizer, task, spec.prompt) if chat else None
    own_engine = engine is None
    if own_engine:
        from vineppo.engine.factory import make_engine

        engine = make_engine(engine_cfg or EngineConfig(), model_path=str(checkpoint_dir), tokenizer=tokenizer,
                             seed=seed, max_model_len=max_sequence_length, progress=progress)
    try:
        summary, records = evaluate_model(
            engine, tokenizer, task, rows, n_samples=n_samples, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, max_sequence_length=max_sequence_length, progress=progress,
            prompt_ids=prompts.ids if prompts is not None else None, stop=() if chat else STOP_STRINGS,
            unfinished=unfinished)
        backend = _backend_name(engine)
    finally:
        if own_engine:
            engine.close()
    results = {
        **summary,
        "checkpoint": str(checkpoint_dir),
        "iteration": iteration if iteration is not None else (checkpoint_iteration(local) if local.exists() else None),
        "split": split,
        "data_source": data_source if data_source is not None else "hub",
        **_for_split(_settings_dict(task_name, settings, max_problems,
                                    (spec.train_subset_size(), spec.train_subset_seed)), split),
        "engine": backend,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = Path(out_dir) if out_dir is not None else eval_dir(local, split)
    write_results(target, results, records)
    log.info("%s on %s/%s: pass@1 %.4f, maj@%d %.4f -> %s", checkpoint_dir, task_name, split, summary["pass@1"],
             n_samples, summary[f"maj@{n_samples}"], target)
    return results


class _EngineCache:
    """One engine for a sweep over checkpoints of the same run: built once, then each checkpoint's
    weights are loaded in place from its directory (`Engine.update_weights_from_dir`); rebuilt if
    that is impossible."""

    def __init__(self, cfg: EngineConfig, tokenizer, seed: int, max_model_len: int | None, progress: bool):
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.max_model_len, self.progress = max_model_len, progress
        self.engine: Engine | None = None
        self.loaded: str | None = None

    def _build(self, path: str) -> Engine:
        from vineppo.engine.factory import make_engine

        return make_engine(self.cfg, model_path=str(path), tokenizer=self.tokenizer, seed=self.seed,
                           max_model_len=self.max_model_len, progress=self.progress)

    def get(self, path: str) -> Engine:
        if self.loaded == path and self.engine is not None:
            return self.engine
        if self.engine is not None:
            try:
                if not Path(path).is_dir():
                    raise ValueError("not a local directory")
                # straight from the checkpoint directory (vLLM: its workers read the files)
                self.engine.update_weights_from_dir(path)
                self.loaded = path
                return self.engine
            except (KeyError, ValueError, TypeError) as e:
                log.info("rebuilding the engine for %s (in-place weight push impossible: %s)", path, e)
                self.close()
        self.engine = self._build(path)
        self.loaded = path
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine, self.loaded = None, None


def _as_splits(split: str | Sequence[str]) -> list[str]:
    splits = [split] if isinstance(split, str) else list(split)
    if not splits:
        raise EvalError("no split given")
    return splits


@dataclass(frozen=True)
class EvalJob:
    """One model of a run sweep: where its weights are, where its results go, what is left to do."""
    model: str
    #: results go to `<eval_root>/eval/<split>/`
    eval_root: Path
    splits: tuple[str, ...]
    iteration: int | None


def pending_checkpoints(run_dir: str | Path, splits: Sequence[str], wanted: Mapping[str, Any], *,
                        force: bool = False, every: int | None = None,
                        run_cfg: Mapping[str, Any] | None = None) -> list[EvalJob]:
    """A job per complete checkpoint of the run on the grid of `every` iterations (None: all;
    the last checkpoint always) that still lacks results on some of `splits`.

    Incomplete checkpoints (manifest missing or not matching) are skipped with a warning; a split
    whose results.json exists is skipped unless `force` (a warning names differing settings).
    Raises GridError when `every` is not a multiple of the run's save interval.
    """
    complete = []
    for path in ckpt.list_checkpoints(Path(run_dir)):
        ok, why = ckpt.verify_checkpoint(path)
        if not ok:
            log.warning("skipping incomplete checkpoint %s: %s", path, why)
            continue
        complete.append((checkpoint_iteration(path), path))
    its = [it for it, _ in complete if it is not None]
    check_grid(every, save_interval(run_cfg or {}, its), str(run_dir), "--every")
    last = max(its, default=None)
    todo = []
    for it, path in complete:
        if it is not None and not on_grid(it, every, last):
            continue
        left = _splits_left(path, splits, wanted, force)
        if left:
            todo.append(EvalJob(str(path), path, tuple(left), it))
    return todo


def _splits_left(eval_root: Path, splits: Sequence[str], wanted: Mapping[str, Any], force: bool) -> list[str]:
    left = []
    for split in splits:
        existing = None if force else read_results(eval_dir(eval_root, split))
        if existing is None:
            left.append(split)
            continue
        diff = _mismatch(existing, _for_split(wanted, split))
        if diff:
            log.warning("%s already evaluated on %s with other settings (%s); keeping it: pass --force "
                        "to re-evaluate", eval_root, split, "; ".join(diff))
    return left


def initial_job(run_dir: str | Path, run_cfg: Mapping[str, Any], splits: Sequence[str],
                wanted: Mapping[str, Any], *, force: bool = False) -> EvalJob | None:
    """The run's starting model (config.yaml model.name_or_path) as iteration 0, with results in
    `RUN/initial/eval/<split>/`; None when already evaluated."""
    where = str(Path(run_dir) / "config.yaml")
    model = _section(run_cfg, "model", where).get("name_or_path")
    if not model:
        raise EvalError(f"{where}: no model.name_or_path, so the initial model is unknown")
    root = Path(run_dir) / INITIAL_DIR
    left = _splits_left(root, splits, wanted, force)
    return EvalJob(str(model), root, tuple(left), 0) if left else None


def evaluate_run(run_dir: str | Path, task_name: str | None = None, split: str | Sequence[str] = "test", *,
                 data_source: str | None = None, engine_cfg: EngineConfig | None = None, force: bool = False,
                 include_initial: bool = False, n_samples: int = DEFAULT_N_SAMPLES,
                 temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, seed: int = DEFAULT_SEED,
                 max_sequence_length: int | None = None, max_problems: int | None = None,
                 progress: bool = True, grading: str | None = None, unfinished: str = "grade",
                 every: int | None = None, workers: int | None = 1, train_subset: int | None = None,
                 train_subset_seed: int = DEFAULT_TRAIN_SUBSET_SEED) -> list[dict]:
    """Evaluate every complete checkpoint of a run on `split` (one name or several), skipping the
    ones already evaluated (results.json present) unless `force`.

    Task, data source, validation carve and engine knobs default to the run's config.yaml (the
    engine's memory share does not: see `engine_config`).
    include_initial: also evaluate the run's starting model (config.yaml model.name_or_path) as
        iteration 0, into `RUN/initial/eval/<split>/`.
    every: the evaluation grid (`vineppo.evaluate.grid`): only iterations divisible by it, plus the
        run's last checkpoint; None: the run's `eval_every`, else every checkpoint. Must be a
        multiple of the run's save interval.
    workers: processes evaluating checkpoints side by side, one per GPU group
        (`vineppo.evaluate.parallel`); None: one per GPU group of the node (1 without CUDA).
        Each process serves its share of the checkpoints with one engine, whose weights are
        loaded in place from each checkpoint directory.
    grading: the grading mode; None: the run's `grading.mode` (else "official").
    train_subset / train_subset_seed: the "train" split's rows (`DataSpec.train_subset`): every
        checkpoint, in every worker, is evaluated on the same seeded subset.
    Returns the results dicts written by this call, in checkpoint order.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise EvalError(f"run directory {run} does not exist")
    where = str(run / "config.yaml")
    run_cfg = read_run_config(run)
    spec = data_spec(run_cfg, task=task_name, source=data_source, where=where, train_subset=train_subset,
                     train_subset_seed=train_subset_seed)
    splits = _as_splits(split)
    grading = grading or grading_mode(run_cfg, where)
    settings = EvalSettings(n_samples, temperature, top_p, max_new_tokens, seed, max_sequence_length,
                            grading, unfinished)
    wanted = _settings_dict(spec.task, settings, max_problems, (spec.train_subset_size(), spec.train_subset_seed))
    every = every if every is not None else declared_grid(run_cfg)
    todo = pending_checkpoints(run, splits, wanted, force=force, every=every, run_cfg=run_cfg)
    if include_initial:
        first = initial_job(run, run_cfg, splits, wanted, force=force)
        todo = ([first] if first is not None else []) + todo
    if not todo:
        log.info("%s: every checkpoint is already evaluated on %s", run, ", ".join(splits))
        return []
    cfg = engine_cfg or engine_config(run_cfg, where)
    kwargs = dict(n_samples=n_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                  seed=seed, max_sequence_length=max_sequence_length, max_problems=max_problems,
                  progress=progress, grading=grading, unfinished=unfinished)
    if workers is None:
        workers = default_workers(cfg.tensor_parallel_size, len(todo))
    if workers <= 1 or len(todo) == 1:
        return evaluate_jobs(todo, run.name, spec, cfg, **kwargs)
    shares = assign(todo, workers)
    groups = device_groups(visible_devices(), cfg.tensor_parallel_size)
    if groups and len(groups) < len(shares):
        raise EvalError(f"{workers} workers need {len(shares)} groups of {cfg.tensor_parallel_size} GPU(s); "
                        f"this node has {len(groups)}")
    devices = groups[: len(shares)] if groups else [None] * len(shares)
    log.info("%s: %d checkpoints over %d processes (devices %s)", run, len(todo), len(shares), devices)
    done = run_shares(evaluate_jobs, shares, devices, args=(run.name, spec, cfg), kwargs=kwargs)
    order = {job.model: i for i, job in enumerate(todo)}
    return sorted((r for part in done for r in part), key=lambda r: order[r["checkpoint"]])


def evaluate_jobs(jobs: Sequence[EvalJob], run_name: str, spec: DataSpec, engine_cfg: EngineConfig, *,
                  n_samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                  max_sequence_length: int | None, max_problems: int | None, progress: bool, grading: str,
                  unfinished: str) -> list[dict]:
    """Evaluate `jobs` one after the other with one engine (the body of one sweep process)."""
    rows = {s: load_eval_rows(spec, s, max_problems) for s in sorted({s for job in jobs for s in job.splits})}
    tokenizer = load_tokenizer(jobs[-1].model)
    cache = _EngineCache(engine_cfg, tokenizer, seed, max_sequence_length, progress)
    written = []
    try:
        for job in tqdm(jobs, desc=f"eval {run_name}: checkpoints", unit="ckpt", disable=not progress):
            engine = cache.get(job.model)
            for s in job.splits:
                written.append(evaluate_checkpoint(
                    job.model, spec.task, s, data_source=spec.source, out_dir=eval_dir(job.eval_root, s),
                    n_samples=n_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    seed=seed, max_sequence_length=max_sequence_length, max_problems=max_problems,
                    rows=rows[s], engine=engine, tokenizer=tokenizer, iteration=job.iteration, progress=progress,
                    spec=spec, grading=grading, unfinished=unfinished))
    finally:
        cache.close()
    return written
