"""What a run directory says about its evaluation: config.yaml (task, data carve, prompt, grading,
engine), checkpoint directories (iteration, completeness), tokenizer and weights."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from vineppo import checkpoint as ckpt
from vineppo.config import EngineConfig, PromptConfig, from_dict
from vineppo.data import DEFAULT_TRAIN_SUBSET, DEFAULT_TRAIN_SUBSET_SEED, TRAIN_SUBSET_SIZES
from vineppo.evaluate.settings import EVAL_GPU_MEMORY_UTILIZATION, EvalError
from vineppo.tasks import get_task
from vineppo.tasks.base import Task

log = logging.getLogger("vineppo.evaluate")


def read_run_config(run_dir: str | Path) -> dict:
    """The run's `config.yaml` as a dict ({} when there is none)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise EvalError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path}: top level must be a mapping")
    return data


def run_dir_of(checkpoint_dir: str | Path) -> Path | None:
    """RUN for a checkpoint at RUN/checkpoints/iter_NNNNNN (None otherwise)."""
    p = Path(checkpoint_dir).resolve()
    if p.parent.name == "checkpoints" and (p.parent.parent / "config.yaml").is_file():
        return p.parent.parent
    return None


def _section(cfg: Mapping[str, Any], name: str, where: str) -> dict:
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise EvalError(f"{where}: field {name!r} must be a mapping")
    return value


@dataclass(frozen=True)
class DataSpec:
    """Which rows to evaluate: task, source, and the validation carve used by training."""
    task: str
    source: str | None = None
    validation_size: int | None = None
    validation_seed: int = 42
    #: the run's own data fields and answer format (`data.question_field`, ...)
    question_field: str | None = None
    answer_field: str | None = None
    solution_field: str | None = None
    answer_format: str = "hashes"
    #: the run's `prompt` section (chat template, instruction, think tags); None = the paper's prompt
    prompt: PromptConfig | None = None
    #: the train split is evaluated on a seeded subset of this many rows (`vineppo.data.train_subset`);
    #: None = the official evaluation's size for the task (`vineppo.data.TRAIN_SUBSET_SIZES`)
    train_subset: int | None = None
    train_subset_seed: int = DEFAULT_TRAIN_SUBSET_SEED

    def train_subset_size(self) -> int:
        """Rows of the train subset asked for (capped by the split's size when the rows are chosen)."""
        if self.train_subset is not None:
            return self.train_subset
        return TRAIN_SUBSET_SIZES.get(self.task, DEFAULT_TRAIN_SUBSET)

    def make_task(self, tokenizer=None, grading: str = "official") -> Task:
        """The grading task of the run: grader (`grading` mode), custom fields, answer format,
        reasoning tags."""
        from vineppo.config import DataConfig
        from vineppo.prompting import make_task

        data = DataConfig(task=self.task, question_field=self.question_field, answer_field=self.answer_field,
                          solution_field=self.solution_field, answer_format=self.answer_format)
        return make_task(data, self.prompt, tokenizer, grading_mode=grading)


def data_spec(run_cfg: Mapping[str, Any], *, task: str | None, source: str | None, where: str,
              train_subset: int | None = None, train_subset_seed: int = DEFAULT_TRAIN_SUBSET_SEED) -> DataSpec:
    """Task and data source from the arguments, falling back to the run's `data` section;
    `train_subset` / `train_subset_seed`: the rows of the train split (see DataSpec)."""
    if train_subset is not None and train_subset < 1:
        raise EvalError(f"the train subset needs at least 1 row (--train-subset), got {train_subset}")
    data = _section(run_cfg, "data", where)
    task_name = task or data.get("task")
    if not task_name:
        raise EvalError(f"no task given and {where} has no data.task; pass --task gsm8k|math")
    if task and data.get("task") and task != data.get("task"):
        log.warning("evaluating on task %r but the run trained on %r (%s)", task, data.get("task"), where)
    src = source if source is not None else data.get("source")
    vsize = data.get("validation_size")
    vseed = data.get("validation_seed", 42)
    if vsize is not None and not isinstance(vsize, int):
        raise EvalError(f"{where}: data.validation_size must be an integer or null, got {vsize!r}")
    if not isinstance(vseed, int):
        raise EvalError(f"{where}: data.validation_seed must be an integer, got {vseed!r}")
    fields = {k: data.get(k) for k in ("question_field", "answer_field", "solution_field")}
    prompt = _section(run_cfg, "prompt", where)
    prompt_cfg = from_dict(PromptConfig, dict(prompt), where=f"{where}: prompt") if prompt else None
    return DataSpec(str(task_name), src, vsize, vseed, answer_format=data.get("answer_format") or "hashes",
                    prompt=prompt_cfg, train_subset=train_subset, train_subset_seed=train_subset_seed, **fields)


def grading_mode(run_cfg: Mapping[str, Any], where: str) -> str:
    """The run's `grading.mode` ("official" when the config has no grading section)."""
    return str(_section(run_cfg, "grading", where).get("mode", "official"))


def engine_config(run_cfg: Mapping[str, Any], where: str, **overrides: Any) -> EngineConfig:
    """The engine of an evaluation process: the run's engine section (if any) with non-None
    `overrides` applied, except its memory share. Training gives vLLM a fraction of the GPU (0.3 -
    0.4 in the paper configs) so that the trainer fits beside it; an evaluation process has the GPU
    to itself, so it uses `EVAL_GPU_MEMORY_UTILIZATION` unless `gpu_memory_utilization` is given."""
    section = dict(_section(run_cfg, "engine", where))
    section["gpu_memory_utilization"] = EVAL_GPU_MEMORY_UTILIZATION
    section.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(EngineConfig, section, where=f"{where}: engine")


def load_eval_rows(spec: DataSpec, split: str, max_problems: int | None = None) -> list[dict]:
    """Rows of `split` (validation = the same carve as training; train = the seeded subset of
    `spec.train_subset_size()` rows of the train split, i.e. train minus the validation carve),
    optionally the first N."""
    from vineppo.data import load_rows, train_subset

    if split not in ("test", "validation", "train"):
        raise EvalError(f"unknown split {split!r}; use test, validation or train")
    from vineppo.data import is_hub_id

    source = spec.source
    task = spec.make_task()
    custom = task.query_field != get_task(spec.task).query_field or spec.answer_field is not None
    if source is not None and source != "hub" and not Path(source).is_dir() and not (custom and is_hub_id(source)):
        raise EvalError(f"data source {source!r} is not a directory (pass --data-source DIR, or null for the hub)")
    rows = load_rows(spec.task, split, source, validation_size=spec.validation_size, seed=spec.validation_seed,
                     task=task)
    if split == "train":
        total = len(rows)
        rows = train_subset(rows, spec.train_subset_size(), key_field=task.query_field, seed=spec.train_subset_seed)
        log.info("train split: %d of its %d rows (seed %d)", len(rows), total, spec.train_subset_seed)
    if max_problems is not None:
        if max_problems < 1:
            raise EvalError(f"max_problems must be >= 1, got {max_problems}")
        rows = rows[:max_problems]
    return rows


def checkpoint_iteration(checkpoint_dir: str | Path) -> int | None:
    """The training iteration of a checkpoint (MANIFEST.json, else the iter_NNNNNN name)."""
    p = Path(checkpoint_dir)
    mf = p / ckpt.MANIFEST
    if mf.is_file():
        try:
            return int(json.loads(mf.read_text())["iteration"])
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            pass
    if p.name.startswith("iter_") and p.name[5:].isdigit():
        return int(p.name[5:])
    return None


def check_model_dir(checkpoint_dir: Path) -> None:
    """Raise EvalError unless `checkpoint_dir` holds a loadable (and, with a manifest, complete) model."""
    if not checkpoint_dir.is_dir():
        raise EvalError(f"checkpoint {checkpoint_dir} is not a directory")
    if (checkpoint_dir / ckpt.MANIFEST).is_file():
        ok, why = ckpt.verify_checkpoint(checkpoint_dir)
        if not ok:
            raise EvalError(f"checkpoint {checkpoint_dir} is incomplete: {why}")
    elif not (checkpoint_dir / "config.json").is_file():
        raise EvalError(f"{checkpoint_dir} has no config.json: not a Hugging Face model directory")


def load_tokenizer(model_path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf_weights(model_dir: str | Path) -> dict | None:
    """HF-named weights from the safetensors files of `model_dir` (None if it has none)."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors"))
    if not files:
        return None
    state: dict = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
