"""Evaluating the demo's models: the SFT start (cached inside its directory) and every checkpoint
of the RL runs, with an open rollout engine whose weights are swapped in place."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from vineppo.config import TrainConfig
from vineppo.demo.config import DemoEval, _sha, code_fingerprint


def _eval_kwargs(ev: DemoEval, max_sequence_length: int) -> dict:
    return dict(n_samples=ev.n_samples, temperature=ev.temperature, top_p=ev.top_p,
                max_new_tokens=ev.max_new_tokens, seed=ev.seed, max_sequence_length=max_sequence_length)


def _evaluate(model_dir: Path, out_dir: Path, rows: list[dict], split: str, data_dir: Path, ev: DemoEval,
              train_cfg: TrainConfig, *, engine=None, tokenizer=None, iteration: int | None = None) -> dict:
    from vineppo.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(model_dir, train_cfg.data.task, split, data_source=str(data_dir), out_dir=out_dir,
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
    """Evaluate the SFT start on each split, cached inside its directory (keyed by the rows, the
    evaluation settings and the code: `code_fingerprint`). Returns {split: results dir}, whether everything came from the cache."""
    from vineppo.engine.factory import resolve_backend
    from vineppo.evaluate import load_tokenizer

    backend = resolve_backend(train_cfg.engine)
    dirs, todo = {}, []
    for split, rows in splits.items():
        key = _sha({"code": code_fingerprint(), "rows": _sha(rows), "eval": asdict(ev), "backend": backend,
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


