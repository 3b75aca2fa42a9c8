"""Worker of tests/test_mc_balance.py's 2-process test: under `accelerate launch` of 2 CPU
processes (launch/cpu/ddp.yaml), each rank takes its own questions (rank 0 six questions with the longest gold
solutions, rank 1 the shortest one and rank 0's first question again), uses their gold solutions as sampled responses, and runs
VinePPO's MC on them with the transformers engine (per-state seeds) under several settings: not
balanced, balanced by count and by tokens (fixed K), and adaptive not balanced / balanced. Each
rank writes OUT/rank<r>.json: per setting, its episodes' step values, the states its engine ran and
the MC stats.

    accelerate launch --config_file launch/cpu/ddp.yaml tests/scripts/mc_balance_worker.py MODEL_DIR DATA_DIR OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED, ITERATION = 1234, 0
K = 3
MAX_NEW_TOKENS = 96
#: (setting, mc.balance_split or None for unbalanced, adaptive)
SETTINGS = [("off", None, False), ("count", "count", False), ("tokens", "tokens", False),
            ("adaptive_off", None, True), ("adaptive_tokens", "tokens", True)]


def read_rows(data_dir) -> list[dict]:
    with open(Path(data_dir) / "train.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rank_questions(rows, task) -> list[list[int]]:
    """Rank 0: the 6 longest gold solutions among the rows; rank 1: the shortest, and rank 0's
    first question again."""
    by_len = sorted(range(len(rows)), key=lambda i: len(task.gold_solution(rows[i])))
    long, short = by_len[-6:][::-1], by_len[:1]
    return [long, short + [long[0]]]


def rank_episodes(tok, task, rows, rank: int):
    """One episode per question of the rank whose response is the gold solution (SFT target),
    scored 1; rank 1's repeat of rank 0's first question answers with its first line only (one
    step: its one state, s0, is also on rank 0)."""
    from vineppo.episodes import Episode
    from vineppo.tokens import decode_response, encode_prompt, token_char_starts

    eps = []
    questions = rank_questions(rows, task)[rank]
    for n, q in enumerate(questions):
        target = task.sft_target(rows[q]).rstrip("\n")
        if rank == 1 and n == len(questions) - 1:
            target = "\n" + target.strip("\n").split("\n")[0]
        ids = tok(target, add_special_tokens=False)["input_ids"]
        text = decode_response(tok, ids)
        eps.append(Episode(question_index=q, sample_index=0, prompt_ids=encode_prompt(tok, task.prompt(rows[q])),
                           response_ids=ids, response_text=text, finished=True, truncated=False, reward=1.0,
                           step_boundaries=task.split_steps(text), token_starts=token_char_starts(tok, ids, text)))
    return eps


def budget_of(adaptive: bool):
    from vineppo.mc import MCBudget

    return MCBudget(k=K, adaptive=adaptive, k_min=2, k_max=6, target_halfwidth=0.3)


def estimate(engine, task, tok, rows, episodes, seed, adaptive, group=None, balance=None) -> dict:
    from vineppo.mc import estimate_mc_values

    return estimate_mc_values(engine, task, tok, rows, episodes, k=K, cap=None, temperature=0.6, top_p=0.9,
                              max_new_tokens=MAX_NEW_TOKENS, max_sequence_length=1024, stop=[], seed=seed,
                              budget=budget_of(adaptive), group=group, balance=balance)


class CountingEngine:
    """Records the prompts of every call of the engine it wraps."""

    def __init__(self, inner):
        self.inner, self.prompts = inner, []

    def generate(self, prompts, sampling, desc=None):
        self.prompts += [list(p) for p in prompts]
        return self.inner.generate(prompts, sampling, desc=desc)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main(model_dir: str, data_dir: str, out: str) -> None:
    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from vineppo.engine import HFEngine
    from vineppo.mc_balance import RankGroup
    from vineppo.seeds import mc_seed
    from vineppo.tasks import get_task

    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    group = RankGroup.from_accelerator(state)
    assert group.world == 2, f"expected 2 processes, got {group.world}"
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = get_task("gsm8k")
    rows = read_rows(data_dir)
    episodes = rank_episodes(tok, task, rows, group.rank)
    engine = CountingEngine(HFEngine(model_dir, tok, progress=False))
    seed = mc_seed(SEED, group.rank, ITERATION)
    result = {}
    for name, balance, adaptive in SETTINGS:
        engine.prompts = []
        stats = estimate(engine, task, tok, rows, episodes, seed, adaptive, group=group, balance=balance)
        result[name] = {"values": [e.step_values for e in episodes], "prompts": engine.prompts,
                        "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))}}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{group.rank}.json").write_text(json.dumps(result))
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
