"""Evaluation: sample n responses per problem, grade them, report pass@1, pass@k and maj@k (spec §4).

Protocol (the paper's): 16 samples per problem at T=0.35, top_p=0.9, at most 1024 new tokens,
seed 42, the training prompt and stop string. pass@1 is the mean correctness over all samples,
averaged over problems (the official `correct_frac`, spec §6 [issue #10]). Every sample is
graded, including those cut by `max_new_tokens` or `max_sequence_length`, as in the official
evaluation (`unfinished="grade"`); `unfinished="wrong"` counts them as wrong without grading, like
the training reward. `grading` picks the grader: "official" (the paper's) or "math_verify".

Files, per evaluated checkpoint and split (`eval/<split>/` under the checkpoint by default):
- `results.json`: the summary (pass@1, pass@k, maj@k, lengths, counts) plus what was evaluated
  (checkpoint, iteration, task, split, data source, sampling settings, engine backend);
- `samples.jsonl`: one JSON object per sample (problem and sample index, response, extracted
  answer, verdict, finish reason, token count).
Both are written atomically (temporary file, then rename); `results.json` is written last, so
its presence means the evaluation is complete.

The reported checkpoint of a run is chosen on the **validation** split (`vineppo.compare`),
never on test.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from tqdm.auto import tqdm

from vineppo import checkpoint as ckpt
from vineppo.config import EngineConfig, PromptConfig, from_dict
from vineppo.engine.base import Completion, Engine, SamplingParams
from vineppo.tasks import get_task
from vineppo.tasks.base import STOP_STRINGS, Row, Task
from vineppo.tokens import encode_prompt

log = logging.getLogger(__name__)

#: the paper's evaluation sampling (spec §4)
DEFAULT_N_SAMPLES = 16
DEFAULT_TEMPERATURE = 0.35
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_SEED = 42
#: problems per engine call (each call generates chunk × n samples)
DEFAULT_CHUNK_PROBLEMS = 128
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
#: where the starting (SFT) model of a run is evaluated by `evaluate_run(include_initial=True)`
INITIAL_DIR = "initial"
#: results keys that must agree for existing results to count as "already evaluated"
SETTING_KEYS = ("task", "n_samples", "temperature", "top_p", "max_new_tokens", "seed", "max_sequence_length",
                "max_problems", "grading", "unfinished")
#: what evaluation does with samples cut by the token budget: grade their text (the official
#: evaluation) or count them wrong (the training reward's rule)
UNFINISHED_RULES = ("grade", "wrong")


class EvalError(ValueError):
    """Bad evaluation input (a missing checkpoint, an unreadable config.yaml, ...)."""


# ----------------------------------------------------------------------------- estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from `n` samples of which `c` are correct (Chen et al., 2021):

        pass@k = 1 - C(n - c, k) / C(n, k)

    i.e. the probability that a random size-k subset of the n samples holds a correct one.
    pass@1 = c / n; pass@n = 1 if c > 0 else 0. Computed with exact integer binomials.
    """
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the sample whose answer wins the vote, or None when no sample has an answer.

    Votes are the answers themselves (compare them in a canonical form, see `vote_key`); `None`
    (no answer) does not vote. Ties are broken deterministically: among the most frequent answers,
    the one that appears first (lowest sample index) wins. The returned index is that answer's
    first occurrence.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, a in enumerate(answers):
        if a is not None and counts[a] == best:
            return i
    return None  # pragma: no cover - unreachable: some answer has the best count


def majority_vote(answers: Sequence[str | None], verdicts: Sequence[bool]) -> bool:
    """maj@k for one problem: True iff the majority answer is correct.

    `answers[i]` is sample i's extracted answer in canonical form (None = no answer; it does not
    vote) and `verdicts[i]` its grade. The winner is chosen by `majority_answer` (most frequent
    answer; ties go to the answer seen first). The vote is correct iff the verdict of the winner's
    first occurrence is True (samples with the same canonical answer share a verdict, except in
    rare grader timeouts, so the first occurrence decides). No answer at all: False.
    """
    if len(answers) != len(verdicts):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(verdicts)} verdicts")
    i = majority_answer(answers)
    return bool(verdicts[i]) if i is not None else False


#: a plain decimal number, as the GSM8K grader accepts it (no exponents, inf or nan)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _canonical_number(text: str) -> str | None:
    """`text` as a canonical decimal string if it is a plain number (`+18.0` -> `18`), else None."""
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text).normalize()
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None
    return format(value, "f") if value != 0 else "0"


def vote_key(task: Task, answer: str | None) -> str | None:
    """The canonical form in which answers are compared for majority voting.

    Whitespace runs collapse to one space. For GSM8K-format tasks (numbers graded as numbers), the
    grader's normalisation also applies: commas removed, lower case, and plain numbers by value
    (`18.0`, `18` and `+18` vote together). MATH answers are already normalised by the
    extractor (`strip_string`); they are compared as strings. Empty answers do not vote.
    """
    if answer is None:
        return None
    from vineppo.tasks.gsm8k import GSM8KTask

    key = " ".join(answer.split())
    while getattr(task, "inner", None) is not None:  # custom fields / reasoning tags wrap the grader
        task = task.inner
    if isinstance(task, GSM8KTask):  # GSM8K and tasks in its answer format (the demo's arithmetic)
        key = key.replace(",", "").lower()
        number = _canonical_number(key)
        key = number if number is not None else key
    return key or None


def extracted_answer(task: Task, response: str, row: Row) -> str | None:
    """The answer the grader would read from `response` (with the question, where it matters)."""
    extract_many = getattr(task, "extract_answers", None)
    if callable(extract_many):
        answers = extract_many(response, row)
        return ", ".join(answers) if answers else None
    return task.extract_answer(response)


# ----------------------------------------------------------------------------- one model


@dataclass(frozen=True)
class EvalSettings:
    """The sampling protocol of one evaluation (defaults: the paper's, spec §4)."""
    n_samples: int = DEFAULT_N_SAMPLES
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = DEFAULT_SEED
    #: caps max_new_tokens per prompt; prompt + response longer than this is "truncated"
    max_sequence_length: int | None = None
    #: the grading mode (vineppo.tasks.GRADING_MODES)
    grading: str = "official"
    #: samples cut by the budget: "grade" them (official) or count them "wrong"
    unfinished: str = "grade"

    def __post_init__(self):
        if self.n_samples < 1:
            raise EvalError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.max_new_tokens < 1:
            raise EvalError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise EvalError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n_samples > 1:
            raise EvalError(f"temperature 0 (greedy) makes all {self.n_samples} samples identical; "
                             f"use n_samples 1 (--n-samples 1) for greedy evaluation")
        if self.max_sequence_length is not None and self.max_sequence_length < 2:
            raise EvalError(f"max_sequence_length must be >= 2, got {self.max_sequence_length}")
        from vineppo.tasks import GRADING_MODES

        if self.grading not in GRADING_MODES:
            raise EvalError(f"grading must be one of {', '.join(GRADING_MODES)}, got {self.grading!r}")
        if self.unfinished not in UNFINISHED_RULES:
            raise EvalError(f"unfinished must be one of {', '.join(UNFINISHED_RULES)}, got {self.unfinished!r}")


def _token_budget(prompt_len: int, settings: EvalSettings) -> int:
    """max_new_tokens capped by the context left after the prompt (spec §1.3: min(1024, ctx - prefix))."""
    if settings.max_sequence_length is None:
        return settings.max_new_tokens
    return min(settings.max_new_tokens, settings.max_sequence_length - prompt_len)


def _generate_chunk(engine: Engine, prompts: Sequence[list[int]], settings: EvalSettings,
                    seed: int, stop: Sequence[str] = STOP_STRINGS) -> list[list[Completion]]:
    """Generate n samples per prompt; prompts are grouped by their token budget."""
    out: list[list[Completion] | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(_token_budget(len(p), settings), []).append(i)
    for budget, idx in sorted(groups.items()):
        if budget < 1:  # no room left after the prompt: every sample is unfinished
            for i in idx:
                out[i] = [Completion([], "", "length") for _ in range(settings.n_samples)]
            continue
        params = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                                max_new_tokens=budget, stop=tuple(stop), seed=seed)
        for i, comps in zip(idx, engine.generate([prompts[i] for i in idx], params, desc="eval: generate")):
            out[i] = comps
    return out  # type: ignore[return-value]


def _grade(task: Task, rows: Sequence[Row], records: list[dict], unfinished: str = "grade") -> None:
    """Set `correct` and `graded` on every record. With unfinished="wrong", samples cut by the
    token budget (finish_reason "length" or truncated) are wrong without being graded."""
    for r in records:
        r["graded"] = unfinished == "grade" or (r["finish_reason"] == "stop" and not r["truncated"])
    todo = [r for r in records if r["graded"]]
    verdicts = task.grade_many([r["response"] for r in todo], [rows[r["problem_index"]] for r in todo])
    for r in records:
        r["correct"] = False
    for r, ok in zip(todo, verdicts):
        r["correct"] = bool(ok)


def _gold(task: Task, row: Row) -> str | None:
    try:
        return task.gold_answer(row)
    except (KeyError, TypeError, ValueError):
        return None


def _was_graded(record: Mapping[str, Any]) -> bool:
    # Records written before `graded` existed followed the "wrong" rule.
    return bool(record.get("graded", record["finish_reason"] == "stop" and not record["truncated"]))


def summarize(task: Task, records: Sequence[Mapping[str, Any]], n_samples: int) -> dict:
    """Summary metrics from per-sample records (each with problem_index, correct, vote, tokens, ...)."""
    by_problem: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        by_problem.setdefault(int(r["problem_index"]), []).append(r)
    if not by_problem:
        raise ValueError("summarize: no samples")
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n_samples) if k <= n_samples})
    pass_k = {k: [] for k in ks}
    maj = []
    for samples in by_problem.values():
        samples = sorted(samples, key=lambda r: r["sample_index"])
        n = len(samples)
        c = sum(bool(r["correct"]) for r in samples)
        for k in ks:
            pass_k[k].append(pass_at_k(n, c, min(k, n)))
        maj.append(majority_vote([vote_key(task, r["extracted_answer"]) if _was_graded(r) else None
                                  for r in samples],
                                 [bool(r["correct"]) for r in samples]))
    total = len(records)
    out: dict[str, Any] = {f"pass@{k}": float(sum(v) / len(v)) for k, v in pass_k.items()}
    out[f"maj@{n_samples}"] = float(sum(maj) / len(maj))
    out.update({
        "mean_response_tokens": float(sum(r["tokens"] for r in records) / total),
        "num_problems": len(by_problem),
        "num_samples": total,
        "num_correct": int(sum(bool(r["correct"]) for r in records)),
        "finished_frac": float(sum(r["finish_reason"] == "stop" for r in records) / total),
        "truncated_frac": float(sum(bool(r["truncated"]) for r in records) / total),
        "no_answer_frac": float(sum(r["extracted_answer"] is None for r in records) / total),
    })
    return out


def evaluate_model(engine: Engine, tokenizer, task: Task, rows: Sequence[Row], *,
                   n_samples: int = DEFAULT_N_SAMPLES, temperature: float = DEFAULT_TEMPERATURE,
                   top_p: float = DEFAULT_TOP_P, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   seed: int = DEFAULT_SEED, max_sequence_length: int | None = None,
                   chunk_problems: int = DEFAULT_CHUNK_PROBLEMS, progress: bool = True,
                   prompt_ids=None, stop: Sequence[str] = STOP_STRINGS,
                   unfinished: str = "grade") -> tuple[dict, list[dict]]:
    """Sample `n_samples` responses per row with `engine`, grade them with `task`.

    Returns (summary, records).
    - summary: "pass@1" (a fraction in [0, 1]: mean correctness over all samples, averaged over
      problems), "pass@k" for k in 2, 4, 8, ... up to n, f"pass@{n}", f"maj@{n}" (see
      `majority_vote`), "mean_response_tokens", "num_problems", "num_samples", "num_correct",
      "finished_frac", "truncated_frac", "no_answer_frac", "seconds", "generated_tokens".
    - records: one dict per sample: problem_index, sample_index, response, extracted_answer,
      gold_answer, correct, finish_reason ("stop" | "length"), truncated, tokens.
    unfinished: "grade" (default, the official evaluation) grades every sample; "wrong" makes
    unfinished samples (finish_reason "length") and samples whose prompt + response exceed
    `max_sequence_length` wrong without grading, and keeps them out of maj@n.
    The grading mode is the task's (`get_task(name, grading_mode=...)`).
    """
    settings = EvalSettings(n_samples, temperature, top_p, max_new_tokens, seed, max_sequence_length,
                            getattr(task, "grading_mode", "official"), unfinished)
    if not rows:
        raise ValueError("evaluate_model: no rows to evaluate")
    if chunk_problems < 1:
        raise ValueError(f"chunk_problems must be >= 1, got {chunk_problems}")
    t0 = time.perf_counter()
    records: list[dict] = []
    starts = range(0, len(rows), chunk_problems)
    bar = tqdm(total=len(rows), desc=f"eval {task.name}: problems", unit="problem", disable=not progress)
    for chunk_index, begin in enumerate(starts):
        chunk = rows[begin: begin + chunk_problems]
        if prompt_ids is None:  # the paper's prompt; chat prompts: vineppo.prompting.PromptBuilder.ids
            prompts = [encode_prompt(tokenizer, task.prompt(r)) for r in chunk]
        else:
            prompts = [list(prompt_ids(r)) for r in chunk]
        outs = _generate_chunk(engine, prompts, settings, seed + chunk_index, stop)
        for offset, (prompt, comps) in enumerate(zip(prompts, outs)):
            p = begin + offset
            gold = _gold(task, rows[p])
            for j, c in enumerate(comps):
                truncated = (max_sequence_length is not None
                             and len(prompt) + len(c.token_ids) + (c.finish_reason == "stop") > max_sequence_length)
                records.append({
                    "problem_index": p, "sample_index": j, "response": c.text,
                    "extracted_answer": extracted_answer(task, c.text, rows[p]), "gold_answer": gold,
                    "correct": False, "finish_reason": c.finish_reason, "truncated": bool(truncated),
                    "tokens": len(c.token_ids),
                })
        bar.update(len(chunk))
    bar.close()
    t_gen = time.perf_counter() - t0
    _grade(task, rows, records, unfinished)
    summary = summarize(task, records, n_samples)
    summary["generated_tokens"] = int(sum(r["tokens"] for r in records))
    summary["seconds"] = time.perf_counter() - t0
    summary["generate_seconds"] = t_gen
    return summary, records


# ----------------------------------------------------------------------------- files


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_results(out_dir: str | Path, results: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write `samples.jsonl` then `results.json` into `out_dir` (each atomically). Returns results.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / SAMPLES_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    _atomic_write_text(out / RESULTS_FILE, json.dumps(dict(results), indent=1) + "\n")
    return out / RESULTS_FILE


def read_results(path: str | Path) -> dict | None:
    """The results in `path` (a results.json or its directory), or None if absent or unreadable."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable eval results %s: %s", p, e)
        return None
    if not isinstance(data, dict) or "pass@1" not in data:
        log.warning("ignoring eval results %s: no 'pass@1' field", p)
        return None
    return data


def eval_dir(checkpoint_dir: str | Path, split: str) -> Path:
    """Where the results of `checkpoint_dir` on `split` live by default: `<ckpt>/eval/<split>/`."""
    return Path(checkpoint_dir) / "eval" / split


# ----------------------------------------------------------------------------- checkpoints and runs


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
    #: the run's own data fields and answer format (`data.question_field`, ...), issue 14
    question_field: str | None = None
    answer_field: str | None = None
    solution_field: str | None = None
    answer_format: str = "hashes"
    #: the run's `prompt` section (chat template, instruction, think tags); None = the paper's prompt
    prompt: PromptConfig | None = None

    def make_task(self, tokenizer=None, grading: str = "official") -> Task:
        """The grading task of the run: grader (`grading` mode), custom fields, answer format,
        reasoning tags."""
        from vineppo.config import DataConfig
        from vineppo.prompting import make_task

        data = DataConfig(task=self.task, question_field=self.question_field, answer_field=self.answer_field,
                          solution_field=self.solution_field, answer_format=self.answer_format)
        return make_task(data, self.prompt, tokenizer, grading_mode=grading)


def data_spec(run_cfg: Mapping[str, Any], *, task: str | None, source: str | None, where: str) -> DataSpec:
    """Task and data source from the arguments, falling back to the run's `data` section."""
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
                    prompt=prompt_cfg, **fields)


def grading_mode(run_cfg: Mapping[str, Any], where: str) -> str:
    """The run's `grading.mode` ("official" when the config has no grading section)."""
    return str(_section(run_cfg, "grading", where).get("mode", "official"))


def engine_config(run_cfg: Mapping[str, Any], where: str, **overrides: Any) -> EngineConfig:
    """The run's engine section (if any) with non-None `overrides` applied."""
    section = dict(_section(run_cfg, "engine", where))
    section.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(EngineConfig, section, where=f"{where}: engine")


def load_eval_rows(spec: DataSpec, split: str, max_problems: int | None = None) -> list[dict]:
    """Rows of `split` (validation = the same carve as training), optionally the first N."""
    from vineppo.data import load_rows

    if split not in ("test", "validation", "train"):
        raise EvalError(f"unknown split {split!r}; use test or validation")
    from vineppo.data import is_hub_id

    source = spec.source
    task = spec.make_task()
    custom = task.query_field != get_task(spec.task).query_field or spec.answer_field is not None
    if source is not None and source != "hub" and not Path(source).is_dir() and not (custom and is_hub_id(source)):
        raise EvalError(f"data source {source!r} is not a directory (pass --data-source DIR, or null for the hub)")
    rows = load_rows(spec.task, split, source, validation_size=spec.validation_size, seed=spec.validation_seed,
                     task=task)
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


def _settings_dict(task: str, settings: EvalSettings, max_problems: int | None) -> dict:
    return {"task": task, "n_samples": settings.n_samples, "temperature": settings.temperature,
            "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens, "seed": settings.seed,
            "max_sequence_length": settings.max_sequence_length, "max_problems": max_problems,
            "grading": settings.grading, "unfinished": settings.unfinished}


def _mismatch(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [f"{k}: {existing.get(k)!r} != {wanted[k]!r}" for k in SETTING_KEYS if existing.get(k) != wanted[k]]


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
        **_settings_dict(task_name, settings, max_problems),
        "engine": backend,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = Path(out_dir) if out_dir is not None else eval_dir(local, split)
    write_results(target, results, records)
    log.info("%s on %s/%s: pass@1 %.4f, maj@%d %.4f -> %s", checkpoint_dir, task_name, split, summary["pass@1"],
             n_samples, summary[f"maj@{n_samples}"], target)
    return results


class _EngineCache:
    """One engine for a sweep over checkpoints of the same run: built once, then new weights are
    pushed in place (`Engine.update_weights`); rebuilt if a push is impossible."""

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
            weights = load_hf_weights(path) if Path(path).is_dir() else None
            try:
                if weights is None:
                    raise ValueError("no safetensors weights")
                self.engine.update_weights(weights)
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
                        force: bool = False) -> list[EvalJob]:
    """A job per complete checkpoint of the run that still lacks results on some of `splits`.

    Incomplete checkpoints (manifest missing or not matching) are skipped with a warning; a split
    whose results.json exists is skipped unless `force` (a warning names differing settings).
    """
    todo = []
    for path in ckpt.list_checkpoints(Path(run_dir)):
        ok, why = ckpt.verify_checkpoint(path)
        if not ok:
            log.warning("skipping incomplete checkpoint %s: %s", path, why)
            continue
        left = _splits_left(path, splits, wanted, force)
        if left:
            todo.append(EvalJob(str(path), path, tuple(left), checkpoint_iteration(path)))
    return todo


def _splits_left(eval_root: Path, splits: Sequence[str], wanted: Mapping[str, Any], force: bool) -> list[str]:
    left = []
    for split in splits:
        existing = None if force else read_results(eval_dir(eval_root, split))
        if existing is None:
            left.append(split)
            continue
        diff = _mismatch(existing, wanted)
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
                 progress: bool = True, grading: str | None = None, unfinished: str = "grade") -> list[dict]:
    """Evaluate every complete checkpoint of a run on `split` (one name or several), skipping the
    ones already evaluated (results.json present) unless `force`.

    Task, data source, validation carve and engine knobs default to the run's config.yaml.
    include_initial: also evaluate the run's starting model (config.yaml model.name_or_path) as
        iteration 0, into `RUN/initial/eval/<split>/`.
    One engine serves all checkpoints (weights are pushed in place between them).
    grading: the grading mode; None: the run's `grading.mode` (else "official").
    Returns the results dicts written by this call.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise EvalError(f"run directory {run} does not exist")
    where = str(run / "config.yaml")
    run_cfg = read_run_config(run)
    spec = data_spec(run_cfg, task=task_name, source=data_source, where=where)
    splits = _as_splits(split)
    grading = grading or grading_mode(run_cfg, where)
    settings = EvalSettings(n_samples, temperature, top_p, max_new_tokens, seed, max_sequence_length,
                            grading, unfinished)
    wanted = _settings_dict(spec.task, settings, max_problems)
    todo = pending_checkpoints(run, splits, wanted, force=force)
    if include_initial:
        first = initial_job(run, run_cfg, splits, wanted, force=force)
        todo = ([first] if first is not None else []) + todo
    if not todo:
        log.info("%s: every checkpoint is already evaluated on %s", run, ", ".join(splits))
        return []
    rows = {s: load_eval_rows(spec, s, max_problems) for s in sorted({s for job in todo for s in job.splits})}
    tokenizer = load_tokenizer(todo[-1].model)
    cache = _EngineCache(engine_cfg or engine_config(run_cfg, where), tokenizer, seed, max_sequence_length, progress)
    written = []
    try:
        for job in tqdm(todo, desc=f"eval {run.name}: checkpoints", unit="ckpt", disable=not progress):
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
