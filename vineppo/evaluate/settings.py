"""What an evaluation is run with: the paper's sampling defaults, `EvalSettings`, file names, and
the settings recorded in results.json (which decide whether a checkpoint is already evaluated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: the paper's evaluation sampling (spec §4)
DEFAULT_N_SAMPLES = 16
DEFAULT_TEMPERATURE = 0.35
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_SEED = 42
#: vLLM's share of GPU memory in an evaluation process (nothing else runs on its GPU)
EVAL_GPU_MEMORY_UTILIZATION = 0.9
#: problems per engine call (each call generates chunk × n samples)
DEFAULT_CHUNK_PROBLEMS = 128
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
#: where the starting (SFT) model of a run is evaluated by `evaluate_run(include_initial=True)`
INITIAL_DIR = "initial"
#: results keys that must agree for existing results to count as "already evaluated"
SETTING_KEYS = ("task", "n_samples", "temperature", "top_p", "max_new_tokens", "seed", "max_sequence_length",
                "max_problems", "grading", "unfinished", "train_subset", "train_subset_seed")
#: keys that only the train split's results set (None on the other splits)
TRAIN_SPLIT_KEYS = ("train_subset", "train_subset_seed")
#: what evaluation does with samples cut by the token budget: grade their text (the official
#: evaluation) or count them wrong (the training reward's rule)
UNFINISHED_RULES = ("grade", "wrong")


class EvalError(ValueError):
    """Bad evaluation input (a missing checkpoint, an unreadable config.yaml, ...)."""


@dataclass(frozen=True)
class EvalSettings:
    """The sampling protocol of one evaluation (defaults: the paper's, spec §4)."""
    #: samples per problem; pass@1 is their mean correctness
    n_samples: int = DEFAULT_N_SAMPLES
    #: sampling temperature (0 = greedy, with n_samples 1)
    temperature: float = DEFAULT_TEMPERATURE
    #: nucleus sampling threshold
    top_p: float = DEFAULT_TOP_P
    #: response budget in tokens
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    #: the engine's sampling seed
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


def _settings_dict(task: str, settings: EvalSettings, max_problems: int | None,
                   train_subset: tuple[int, int] | None = None) -> dict:
    """What results.json records of an evaluation's settings; `train_subset`: (rows asked for,
    seed) of the train split's subset, kept by `_for_split` on that split only."""
    size, subset_seed = train_subset if train_subset is not None else (None, None)
    return {"task": task, "n_samples": settings.n_samples, "temperature": settings.temperature,
            "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens, "seed": settings.seed,
            "max_sequence_length": settings.max_sequence_length, "max_problems": max_problems,
            "grading": settings.grading, "unfinished": settings.unfinished,
            "train_subset": size, "train_subset_seed": subset_seed}


def _for_split(settings: Mapping[str, Any], split: str) -> dict:
    """`settings` as recorded for `split`: the train subset's keys are None on other splits."""
    return {**settings, **({} if split == "train" else {k: None for k in TRAIN_SPLIT_KEYS})}


def _mismatch(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [f"{k}: {existing.get(k)!r} != {wanted[k]!r}" for k in SETTING_KEYS if existing.get(k) != wanted[k]]
