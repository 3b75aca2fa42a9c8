"""Dataset rows for a task: the official repository's data files, a local directory of JSON Lines
files, or the HF hub.

Splits (spec §3):
- The official files (McGill-NLP/VinePPO `scripts/download_and_prepare_dataset.sh` unpacks them to
  `data/gsm8k`, `data/math`): HF `DatasetDict`s saved with `save_to_disk` (a `dataset_dict.json`
  beside `train/`, `validation/`, `test/`), read by `datasets.load_from_disk` like the official
  `Task._load_data_source`. Their three splits are used as they are: the paper's exact rows.
- A JSONL directory with `validation.jsonl`: likewise, that file is the validation split.
- Otherwise "test" is the task's test file (GSM8K test, 1,319 rows; MATH-500) and "train" /
  "validation" are the train file with a validation set carved out of it. The carve is
  deterministic in (seed, question text): a row is chosen by a hash of its question, not its
  position, so the same questions are held out whichever copy of the data (local or hub, in any
  order) is read. Default sizes: GSM8K 373, MATH 500 (spec §3), the official sizes, though not
  the official members. The two parts are disjoint and each keeps the file order.

Rows are validated as they are read: every required field of the task must be a non-empty
string, and the task may check more (`Task.validate_row`, optional). A bad row raises DataError
naming the file and 1-based line (or the hub dataset and row index) and the field. Nothing is
dropped silently; `filter_by_prompt_length` drops on purpose and reports how many.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from vineppo.tasks import Task, get_task

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: validation rows carved from train when `validation_size` is not given (spec §3)
VALIDATION_SIZES = {"gsm8k": 373, "math": 500}
#: seed of the validation carve; fixed so that runs with different training seeds share it
DEFAULT_SPLIT_SEED = 42

GSM8K_HUB = ("openai/gsm8k", "main")
MATH500_HUB = "HuggingFaceH4/MATH-500"
MATH_FULL_HUB = "EleutherAI/hendrycks_math"
MATH_FULL_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

Rows = list[dict[str, Any]]


class DataError(ValueError):
    """A malformed data row or file. `where` names the file and line, or the dataset and row."""

    def __init__(self, where: str, problem: str, *, field: str | None = None, line: int | None = None) -> None:
        self.where = where
        self.problem = problem
        self.field = field
        self.line = line
        super().__init__(f"{where}: {problem}")


# ---------------------------------------------------------------- validation


def _check_row(
    row: Any,
    where: str,
    required_fields: Sequence[str],
    validate_row: Callable[[Any], None] | None,
    line: int | None = None,
) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(where, f"expected a JSON object, got {type(row).__name__}", line=line)
    for name in required_fields:
        if name not in row:
            raise DataError(where, f"required field {name!r} is missing", field=name, line=line)
        value = row[name]
        if not isinstance(value, str):
            raise DataError(where, f"required field {name!r} must be a string, got {type(value).__name__}", field=name, line=line)
        if not value.strip():
            raise DataError(where, f"required field {name!r} is empty", field=name, line=line)
    if validate_row is not None:
        try:
            validate_row(row)
        except ValueError as e:
            raise DataError(where, str(e), line=line) from None
    return row


def _task_checks(task: Task) -> tuple[tuple[str, ...], Callable[[Any], None] | None]:
    return tuple(task.required_fields), getattr(task, "validate_row", None)


def read_jsonl(
    path: str | os.PathLike[str],
    required_fields: Sequence[str] = (),
    validate_row: Callable[[Any], None] | None = None,
) -> Rows:
    """All rows of a JSON Lines file, each validated; blank lines are allowed only at the end."""
    path = Path(path)
    rows: Rows = []
    first_blank: int | None = None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}, line {number}"
            if not raw.strip():
                if first_blank is None:
                    first_blank = number
                continue
            if first_blank is not None:
                raise DataError(f"{path}, line {first_blank}", "blank line before the end of the file", line=first_blank)
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(where, f"not valid UTF-8 ({e.reason} at byte {e.start})", line=number) from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(where, f"invalid JSON ({e.msg}, column {e.colno})", line=number) from None
            rows.append(_check_row(row, where, required_fields, validate_row, line=number))
    return rows


def validate_rows(
    rows: Iterable[Any],
    dataset: str,
    required_fields: Sequence[str] = (),
    validate_row: Callable[[Any], None] | None = None,
) -> Rows:
    """Validate in-memory rows (e.g. a hub dataset); errors name `dataset` and the row index."""
    out: Rows = []
    for index, row in enumerate(rows):
        out.append(_check_row(row, f"{dataset}, row index {index}", required_fields, validate_row))
    return out


# ---------------------------------------------------------------- validation carve


def split_validation(
    rows: Sequence[dict[str, Any]], size: int, *, key_field: str, seed: int = DEFAULT_SPLIT_SEED
) -> tuple[Rows, Rows]:
    """(train, validation): `size` rows chosen by a seeded hash of `row[key_field]`.

    Deterministic across Python versions and independent of the row order; ties (duplicate
    questions) are broken by position. Both parts keep the input order and are disjoint.
    """
    if not 0 <= size <= len(rows):
        raise ValueError(f"validation size {size} is outside [0, {len(rows)}] (the train rows)")
    chosen = set(_hash_order(rows, key_field, str(seed))[:size])
    train = [r for i, r in enumerate(rows) if i not in chosen]
    validation = [r for i, r in enumerate(rows) if i in chosen]
    return train, validation


def _hash_order(rows: Sequence[dict[str, Any]], key_field: str, salt: str) -> list[int]:
    """Row indices sorted by sha256(`salt` NUL question), ties (duplicate questions) by position:
    a seeded order that depends on neither the row order, the process, nor PYTHONHASHSEED."""
    def rank(i: int) -> tuple[str, int]:
        return hashlib.sha256(f"{salt}\x00{rows[i][key_field]}".encode("utf-8")).hexdigest(), i

    return sorted(range(len(rows)), key=rank)


#: rows of the train split evaluated by `vineppo eval --split train` when no size is given: the
#: official evaluation's train subsets (`dataset_portion` of the train split: MATH ~500, GSM8K ~373)
TRAIN_SUBSET_SIZES = {"gsm8k": 373, "math": 500}
#: any other task
DEFAULT_TRAIN_SUBSET = 500
#: seed of the train subset; fixed so that every run and checkpoint is evaluated on the same rows
DEFAULT_TRAIN_SUBSET_SEED = 42


def train_subset(rows: Sequence[dict[str, Any]], size: int, *, key_field: str,
                 seed: int = DEFAULT_TRAIN_SUBSET_SEED) -> Rows:
    """The train rows `vineppo eval --split train` grades: `size` rows (all of them if there are
    fewer) chosen by a seeded hash of `row[key_field]`, in file order.

    Like the validation carve it depends only on (seed, question texts): the same rows in every
    process, on every machine, in any order of the file; and a larger subset contains a smaller
    one of the same seed. Its hash is salted apart from the carve's, so the subset is not the
    next rows of the carve's order. (The official evaluation shuffles the train split with a fixed
    seed and keeps a `dataset_portion` of it: a subset of the same size, not the same members.)
    """
    if size < 1:
        raise ValueError(f"train subset size must be >= 1, got {size}")
    chosen = set(_hash_order(rows, key_field, f"train-subset\x00{seed}")[:size])
    return [r for i, r in enumerate(rows) if i in chosen]


# ---------------------------------------------------------------- sources


def _local_file(directory: Path, task_name: str, file_split: str) -> Path:
    if not directory.is_dir():
        raise FileNotFoundError(f"data source {str(directory)!r} is not a directory")
    tried = [directory / f"{file_split}.jsonl", directory / task_name / f"{file_split}.jsonl"]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {file_split}.jsonl for task {task_name!r}; tried: {', '.join(map(str, tried))}")


#: the file `DatasetDict.save_to_disk` writes: marks a directory in the official data format
OFFICIAL_MARKER = "dataset_dict.json"


def official_dir(source: str | os.PathLike[str], task_name: str) -> Path | None:
    """The official-format `DatasetDict` directory of `source` for `task_name`: `source` itself or
    `source/<task_name>` (the official `data/` root), if it holds a `dataset_dict.json`."""
    root = Path(source)
    for candidate in (root, root / task_name):
        if (candidate / OFFICIAL_MARKER).is_file():
            return candidate
    return None


def read_official_split(directory: Path, split: str, task: Task) -> Rows:
    """The rows of `split` of an official-format `DatasetDict` directory, validated for `task`.
    A list-valued `solution` (OpenAI PRM800K format) is joined with newlines, as the official
    `MATH` task does; other fields (e.g. `_treetune__idx`) are kept as they are."""
    import datasets  # imported here: loading the library is slow and only this path needs it

    loaded = datasets.load_from_disk(str(directory))
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(str(directory), "expected a DatasetDict (train/validation/test splits), got one Dataset")
    if split not in loaded:
        raise DataError(str(directory / OFFICIAL_MARKER),
                        f"no {split!r} split; the official data has: {', '.join(loaded)}")
    rows = []
    for r in loaded[split]:
        r = dict(r)
        if isinstance(r.get("solution"), list):
            r["solution"] = "\n".join(r["solution"])
        rows.append(r)
    required, validate_row = _task_checks(task)
    return validate_rows(rows, f"{directory} (official DatasetDict), split {split!r}", required, validate_row)


def _hub(path: str, name: str | None, split: str) -> Any:
    import datasets  # imported here: loading the library is slow and only the hub path needs it

    return datasets.load_dataset(path, name, split=split)


def _hub_label(path: str, name: str | None, split: str) -> str:
    config = f", config {name!r}" if name else ""
    return f"hub dataset {path!r}{config}, split {split!r}"


def _hub_rows(task: Task, path: str, name: str | None, split: str) -> Rows:
    required, validate_row = _task_checks(task)
    return validate_rows((dict(r) for r in _hub(path, name, split)), _hub_label(path, name, split), required, validate_row)


def last_boxed(solution: str) -> str:
    """The content of the last `\\boxed{...}` (braces matched), or the token after `\\boxed `."""
    start = solution.rfind("\\boxed")
    if start < 0:
        return ""
    i = start + len("\\boxed")
    if solution.startswith("{", i):
        from vineppo.tasks.boxed import braced_content

        return braced_content(solution, i) or ""
    match = re.match(r"\s+([^\s$]+)", solution[i:])
    return match.group(1) if match else ""


def _math_level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*Level\s+(\d+)\s*", str(value))
    return int(match.group(1)) if match else None  # "Level ?" in two original problems


def _hub_math_full(task: Task) -> Rows:
    """All 12,500 MATH problems from a per-subject hub copy, in the local files' schema."""
    required, validate_row = _task_checks(task)
    rows: Rows = []
    for split in ("train", "test"):
        for config in MATH_FULL_CONFIGS:
            label = _hub_label(MATH_FULL_HUB, config, split)
            raw = validate_rows((dict(r) for r in _hub(MATH_FULL_HUB, config, split)), label, required, validate_row)
            for index, r in enumerate(raw):
                rows.append({
                    "problem": r["problem"],
                    "solution": r["solution"],
                    "answer": last_boxed(r["solution"]),
                    "subject": r.get("type"),
                    "level": _math_level(r.get("level")),
                    # Not an original MATH file name: the hub copy does not carry those.
                    "unique_id": f"{MATH_FULL_HUB}:{split}/{config}/{index}",
                })
    return rows


def _hub_split(task_name: str, task: Task, file_split: str) -> Rows:
    if task_name == "gsm8k":
        return _hub_rows(task, GSM8K_HUB[0], GSM8K_HUB[1], file_split)
    if task_name == "math":
        test = _hub_rows(task, MATH500_HUB, None, "test")
        if file_split == "test":
            return test
        # PRM800K train split = every MATH problem that is not in MATH-500, matched by text.
        held_out = {r["problem"].strip() for r in test}
        full = _hub_math_full(task)
        train = [r for r in full if r["problem"].strip() not in held_out]
        removed = len(full) - len(train)
        if removed != len(held_out):
            logger.warning(
                "MATH train from the hub: removed %d of %d problems for MATH-500's %d (expected equal counts; "
                "the hub copies may differ in problem text)", removed, len(full), len(held_out),
            )
        return train
    raise ValueError(f"task {task_name!r} has no hub source; pass a local directory as source")


# ---------------------------------------------------------------- public entry points


def _task_chain(task: Task) -> Iterable[Task]:
    """`task` and the tasks it wraps (`vineppo.tasks.base.TaskWrapper.inner`)."""
    while task is not None:
        yield task
        task = getattr(task, "inner", None)


def is_hub_id(source: str | os.PathLike[str] | None) -> bool:
    """A custom `data.source` that names a hub dataset ("owner/name"), not a local folder: it does
    not exist locally and does not look like a path (no leading "/", ".", "~")."""
    if source is None or str(source) == "hub":
        return False
    text = str(source)
    return not Path(text).exists() and not text.startswith(("/", ".", "~"))


def load_rows(
    task_name: str,
    split: str,
    source: str | os.PathLike[str] | None = None,
    *,
    validation_size: int | None = None,
    seed: int = DEFAULT_SPLIT_SEED,
    task: Task | None = None,
) -> Rows:
    """Validated rows of `split` ("train", "validation" or "test") for task `task_name`.

    source: the official data (a `DatasetDict` directory, or the `data/` root holding
        `<task_name>/`; its own train / validation / test splits are used, `validation_size` is
        ignored), a directory holding `train.jsonl` and `test.jsonl` (and optionally
        `validation.jsonl`, then used as the validation split) or a `<task_name>/` folder with
        them, e.g. the shared data root, or None / "hub" for the hub defaults: GSM8K
        `openai/gsm8k` (main); MATH test `HuggingFaceH4/MATH-500`, MATH train = all of
        `EleutherAI/hendrycks_math` minus the MATH-500 problems.
    validation_size: rows carved from train into "validation" (default: VALIDATION_SIZES).
    seed: seed of the carve.
    task: the Task that validates rows (default `get_task(task_name)`); a
        `vineppo.tasks.custom.CustomFieldsTask` reads your own fields, and then `source` may also be
        a hub dataset id (`datasets.load_dataset(source, split=...)`). With custom fields the
        default validation size is the task's, capped at a tenth of the train rows.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    from vineppo.tasks.custom import CustomFieldsTask

    task = task if task is not None else get_task(task_name)
    custom = any(isinstance(t, CustomFieldsTask) for t in _task_chain(task))
    file_split = "test" if split == "test" else "train"

    hub = source is None or (isinstance(source, str) and source == "hub")
    if not hub and not (custom and is_hub_id(source)):
        official = official_dir(source, task_name)
        if official is not None:
            if validation_size is not None:
                logger.info("data.source %s has the official validation split; validation_size=%d is not used",
                            official, validation_size)
            return read_official_split(official, split, task)
        required, validate_row = _task_checks(task)
        if split != "test":
            try:
                own = _local_file(Path(source), task_name, "validation")
            except FileNotFoundError:
                own = None
            if own is not None:  # the directory ships its validation split: no carve
                return read_jsonl(own if split == "validation" else _local_file(Path(source), task_name, "train"),
                                  required, validate_row)
    if custom and is_hub_id(source):
        rows = _hub_rows(task, str(source), None, file_split)
    elif hub:
        rows = _hub_split(task_name, task, file_split)
    else:
        rows = read_jsonl(_local_file(Path(source), task_name, file_split), required, validate_row)

    if split == "test":
        return rows
    if validation_size is None:
        if task_name not in VALIDATION_SIZES:
            raise ValueError(f"task {task_name!r} has no default validation size; pass validation_size")
        validation_size = VALIDATION_SIZES[task_name]
        if custom:
            validation_size = min(validation_size, len(rows) // 10)
    train, validation = split_validation(rows, validation_size, key_field=task.query_field, seed=seed)
    return train if split == "train" else validation


class PromptFilterResult(NamedTuple):
    rows: Rows
    #: how many rows were dropped for a prompt longer than the budget
    dropped: int


def filter_by_prompt_length(
    rows: Sequence[dict[str, Any]],
    task: Task,
    tokenizer: Any,
    max_prompt_tokens: int,
    *,
    add_special_tokens: bool = True,
    batch_size: int = 1024,
    prompt_ids: Callable[[dict[str, Any]], Sequence[int]] | None = None,
) -> PromptFilterResult:
    """Keep the rows whose `task.prompt(row)` is at most `max_prompt_tokens` tokens.

    Tokens are counted as `tokenizer(prompt).input_ids` with special tokens (BOS) by default,
    like the official filter (`max_question_length`, 1,512 in the paper). Order is kept; the
    number dropped is logged and returned. `prompt_ids(row)`, if given, counts the exact prompt
    ids instead (chat prompts: `vineppo.prompting.PromptBuilder.ids`).
    """
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
    kept: Rows = []
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin:begin + batch_size]
        if prompt_ids is not None:
            kept.extend(r for r in batch if len(prompt_ids(r)) <= max_prompt_tokens)
            continue
        ids = tokenizer([task.prompt(r) for r in batch], add_special_tokens=add_special_tokens)["input_ids"]
        kept.extend(r for r, seq in zip(batch, ids) if len(seq) <= max_prompt_tokens)
    dropped = len(rows) - len(kept)
    logger.info(
        "prompt-length filter (%s, <= %d tokens): kept %d of %d rows, dropped %d",
        task.name, max_prompt_tokens, len(kept), len(rows), dropped,
    )
    return PromptFilterResult(list(kept), dropped)
