"""Evaluation: sample n responses per problem, grade them, report pass@1, pass@k and maj@k (spec §4).

Protocol (the paper's): 16 samples per problem at T=0.35, top_p=0.9, at most 1024 new tokens,
seed 42, the training prompt and stop string. pass@1 is the mean correctness over all samples,
averaged over problems (the official `correct_frac`, spec §6). Every sample is
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

Modules: `settings` (the protocol's defaults, EvalSettings), `metrics` (pass@k, maj@k, summary),
`sampling` (sample and grade one model), `results` (the files), `runs` (what a run directory
says: config, data carve, checkpoints), `grid` (which checkpoints are evaluated and compared),
`sweep` (one checkpoint or every checkpoint of a run), `parallel` (one process per GPU).
Everything is importable from `vineppo.evaluate`.
"""

from __future__ import annotations

from vineppo.evaluate.grid import GridError, check_grid, declared_grid, default_grid, on_grid, save_interval
from vineppo.evaluate.metrics import extracted_answer, majority_answer, majority_vote, pass_at_k, summarize, vote_key
from vineppo.evaluate.results import eval_dir, read_results, write_results
from vineppo.evaluate.runs import (
    DataSpec,
    check_model_dir,
    checkpoint_iteration,
    data_spec,
    engine_config,
    grading_mode,
    load_eval_rows,
    load_hf_weights,
    load_tokenizer,
    read_run_config,
    run_dir_of,
)
from vineppo.evaluate.sampling import evaluate_model
from vineppo.evaluate.settings import (
    DEFAULT_CHUNK_PROBLEMS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_N_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    EVAL_GPU_MEMORY_UTILIZATION,
    INITIAL_DIR,
    RESULTS_FILE,
    SAMPLES_FILE,
    SETTING_KEYS,
    UNFINISHED_RULES,
    EvalError,
    EvalSettings,
)
from vineppo.evaluate.sweep import (
    EvalJob,
    evaluate_checkpoint,
    evaluate_jobs,
    evaluate_run,
    initial_job,
    pending_checkpoints,
)

__all__ = [
    "GridError",
    "check_grid",
    "declared_grid",
    "default_grid",
    "on_grid",
    "save_interval",
    "EVAL_GPU_MEMORY_UTILIZATION",
    "evaluate_jobs",
    "DEFAULT_N_SAMPLES",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_SEED",
    "DEFAULT_CHUNK_PROBLEMS",
    "RESULTS_FILE",
    "SAMPLES_FILE",
    "INITIAL_DIR",
    "SETTING_KEYS",
    "UNFINISHED_RULES",
    "EvalError",
    "EvalSettings",
    "pass_at_k",
    "majority_answer",
    "majority_vote",
    "vote_key",
    "extracted_answer",
    "summarize",
    "write_results",
    "read_results",
    "eval_dir",
    "read_run_config",
    "run_dir_of",
    "DataSpec",
    "data_spec",
    "grading_mode",
    "engine_config",
    "load_eval_rows",
    "checkpoint_iteration",
    "check_model_dir",
    "load_tokenizer",
    "load_hf_weights",
    "evaluate_model",
    "evaluate_checkpoint",
    "EvalJob",
    "pending_checkpoints",
    "initial_job",
    "evaluate_run",
]
