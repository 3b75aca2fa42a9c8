"""MC work balanced across processes (vineppo/mc_balance.py): the global dedup, the split, the
values sent back, per-state seeds, and the balanced result equal to the unbalanced one.

Fast tier: the pure parts by hand; two ranks simulated by two threads that share a gather; the
transformers engine's per-request seeds. Slow tier: 2 CPU processes under `accelerate launch`
(tests/scripts/mc_balance_worker.py), and one 2-process training iteration recomputed in one
process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from test_training import sft_gsm8k  # noqa: F401  (session fixture)
from test_values import CharTokenizer, char_episode
from vineppo.engine.base import Completion, Engine, EngineStats, SamplingParams
from vineppo.mc import MCBudget, MCRequest, build_mc_requests, estimate_mc_values, mc_state_token_counts, request_seed
from vineppo.mc_balance import (RankGroup, ShareResult, assemble_results, imbalance, merge_rank_requests,
                                pack_requests, request_cost, split_requests)
from vineppo.seeds import derive_seed, mc_seed, official_seed
from vineppo.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
TASK = get_task("gsm8k")
ROWS = [{"question": f"Q{i}", "answer": "x\n#### 4"} for i in range(4)]


def req(q: int, prompt: str, prefix: str, passes: int = 1, expected: float = 0.0) -> MCRequest:
    return MCRequest([ord(c) for c in prompt], [ord(c) for c in prefix], q, passes=passes, expected_tokens=expected)


def pack(requests, free=None, seed=7):
    n = len(requests)
    sums, samples = (np.zeros(n), np.zeros(n, dtype=np.int64)) if free is None else free
    return pack_requests(requests, sums, samples, seed)


# ---- the pure parts, by hand -----------------------------------------------------------------
def test_build_requests_counts_passes_and_expected_tokens():
    a = char_episode(TASK, 0, "P", "\nx = 2\ny\n#### 4", j=0)  # 15 tokens; s1 after 6
    b = char_episode(TASK, 0, "P", "\nx = 2\nzz\n#### 5", j=1)  # 16 tokens; same s1
    reqs, per, _ = build_mc_requests([a, b], cap=None)
    assert per == [[0, 1], [0, 1]]
    assert [r.passes for r in reqs] == [2, 2]
    # s0: the whole responses remain, (15 + 16) / 2; s1: (15 − 6 + 16 − 6) / 2
    assert reqs[0].expected_tokens == 15.5 and reqs[1].expected_tokens == 9.5
    assert request_cost(reqs[1]) == 10.5
    # the same tokens under another question are another state
    c = char_episode(TASK, 1, "P", "\nx = 2\ny\n#### 4")
    reqs, per, _ = build_mc_requests([a, c], cap=None)
    assert len(reqs) == 4 and per == [[0, 1], [2, 3]]


def test_merge_deduplicates_over_ranks_by_question_and_prefix():
    rank0 = [req(0, "P0", "", passes=4, expected=20.0), req(0, "P0", "\na", passes=2, expected=10.0),
             req(1, "P1", "")]
    rank1 = [req(0, "P0", "\na", passes=1, expected=4.0),  # rank 0's second state again
             req(2, "P0", ""),                             # the same tokens, another question
             req(1, "P1", "\nb")]
    free0 = (np.array([3.0, 1.0, 0.0]), np.array([4, 2, 0]))
    free1 = (np.array([1.0, 0.0, 0.0]), np.array([1, 0, 0]))
    m = merge_rank_requests([pack(rank0, free0), pack(rank1, free1)])
    assert [(r.question_index, "".join(map(chr, r.prompt_ids)), "".join(map(chr, r.prefix_response_ids)))
            for r in m.requests] == [(0, "P0", ""), (0, "P0", "\na"), (1, "P1", ""), (2, "P0", ""), (1, "P1", "\nb")]
    assert m.owners == [[0, 1, 2], [1, 3, 4]]
    assert [r.passes for r in m.requests] == [4, 3, 1, 1, 1]
    assert m.requests[1].expected_tokens == pytest.approx((2 * 10 + 1 * 4) / 3)  # the mean over its 3 passes
    assert m.free_sums.tolist() == [3.0, 2.0, 0.0, 0.0, 0.0] and m.free_samples.tolist() == [4, 3, 0, 0, 0]


def test_split_by_tokens_longest_first_to_the_least_loaded_rank():
    # longest first: 10→r0, 9→r1, 8→r1 (9 < 10), 3→r0, 2→r0 (13 < 17), 1→r0 (15 < 17)
    shares = split_requests([10, 1, 9, 2, 8, 3], 2, seed=5, by="tokens")
    assert shares == [[0, 1, 3, 5], [2, 4]]
    assert split_requests([10, 1, 9, 2, 8, 3], 2, seed=99, by="tokens") == shares  # distinct costs: no tie to break
    # a skewed batch: one rank's four long states and another's four short ones end up mixed
    costs = [100.0] * 4 + [1.0] * 4
    for by in ("tokens", "count"):
        shares = split_requests(costs, 2, seed=3, by=by)
        assert sorted(i for s in shares for i in s) == list(range(8))
        assert all(s == sorted(s) for s in shares)
    loads = [sum(costs[i] for i in s) for s in split_requests(costs, 2, seed=3, by="tokens")]
    assert loads == [202.0, 202.0]


def test_split_by_count_is_the_shuffled_order_cut_evenly():
    shares = split_requests([1.0] * 7, 3, seed=11, by="count")
    order = np.random.default_rng(11).permutation(7)
    assert shares == [sorted(order[:3].tolist()), sorted(order[3:5].tolist()), sorted(order[5:].tolist())]
    assert split_requests([1.0] * 7, 3, seed=12, by="count") != shares  # the seed shuffles
    assert split_requests([], 2, seed=1) == [[], []]
    with pytest.raises(ValueError, match="by must be"):
        split_requests([1.0], 2, seed=1, by="off")


@pytest.mark.parametrize("seed", range(20))
def test_split_by_tokens_keeps_the_slowest_rank_within_one_state_of_the_mean(seed):
    rng = np.random.default_rng(seed)
    costs = rng.integers(1, 200, size=int(rng.integers(1, 60))).astype(float)
    world = int(rng.integers(2, 6))
    shares = split_requests(costs, world, seed=seed, by="tokens")
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))
    loads = [costs[s].sum() for s in shares]
    assert max(loads) - min(loads) <= costs.max()


def test_results_come_back_to_the_ranks_that_own_the_states():
    # 5 unique states; rank 0 owns [0, 1, 2], rank 1 owns [1, 3, 4]; rank 0 ran {0, 3}, rank 1 {1, 2, 4}
    results = [ShareResult([0, 3], np.array([1.0, 2.0]), np.array([3, 3]), np.array([3, 3]), 0.5),
               ShareResult([1, 2, 4], np.array([0.0, 3.0, 1.5]), np.array([4, 3, 3]), np.array([3, 3, 3]), 1.5)]
    sums, samples, rollouts = assemble_results(results, 5)
    assert sums.tolist() == [1.0, 0.0, 3.0, 2.0, 1.5] and samples.tolist() == [3, 4, 3, 3, 3]
    owners = [[0, 1, 2], [1, 3, 4]]
    assert (sums[owners[1]] / samples[owners[1]]).tolist() == [0.0, 2 / 3, 0.5]
    with pytest.raises(RuntimeError, match="no ranks"):
        assemble_results(results[:1], 5)
    with pytest.raises(RuntimeError, match="several ranks"):
        assemble_results(results + [ShareResult([0], np.zeros(1), np.ones(1), np.ones(1), 0.0)], 5)
    assert imbalance([0.5, 1.5]) == 1.5 and imbalance([2.0, 2.0]) == 1.0 and imbalance([0.0, 0.0]) == 1.0


def test_mc_seed_is_the_same_on_every_rank_unless_the_engine_shares_one_seed():
    assert mc_seed(5, 0, 3) == mc_seed(5, 1, 3) == derive_seed(5, 0, 3, "mc") != mc_seed(5, 0, 4)
    assert mc_seed(5, 1, 3, shared_request_seed=True) == official_seed(5, 1, 3, "mc") == 5 + 100 + 3 + 1


def test_request_seed_names_the_state_by_its_content():
    a, b = req(0, "P", "\nx"), req(0, "P", "\nx")
    assert request_seed(9, a) == request_seed(9, b)
    assert len({request_seed(9, a), request_seed(10, a), request_seed(9, req(1, "P", "\nx")),
                request_seed(9, req(0, "P", "\ny"))}) == 4


# ---- two ranks, simulated by two threads -----------------------------------------------------
class ThreadGroup:
    """`RankGroup.gather` for ranks that are threads of this process."""

    def __init__(self, world: int):
        self.world, self.slots, self.barrier = world, [None] * world, threading.Barrier(world)

    def member(self, rank: int) -> RankGroup:
        def gather(obj):
            self.slots[rank] = obj
            self.barrier.wait()
            out = list(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out
        return RankGroup(rank, self.world, gather)

    def run(self, work) -> None:
        """`work(rank)` on one thread per rank; the first error is re-raised here (the others'
        barrier is broken so that no thread waits for a dead rank)."""
        errors = []

        def guarded(rank):
            try:
                work(rank)
            except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=guarded, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if errors:
            raise errors[0]


class SeededEngine(Engine):
    """An engine whose samples depend on the request's own seed only (as `request_seeds` asks):
    sample j of a request is right ("\\n#### 4") or wrong ("\\n#### 9") by a hash of (seed, j).
    Without request seeds, by the call's seed and the prompt's position (a call-level stream)."""

    def __init__(self):
        self.stats, self.prompts = EngineStats(), []

    def generate(self, prompts, sampling, desc=None):
        seeds = sampling.seeds_per_request(len(prompts)) or [sampling.seed * 1000 + i for i in range(len(prompts))]
        self.prompts += [tuple(p) for p in prompts]
        out = []
        for s in seeds:
            texts = ["\n#### 4" if hashlib.sha256(f"{s}|{j}".encode()).digest()[0] % 3 else "\n#### 9"
                     for j in range(sampling.n)]
            out.append([Completion([ord(c) for c in t], t, "stop") for t in texts])
        return out

    def update_weights(self, state_dict):
        pass


def rank_episodes():
    """Rank 0: question 0's long responses; rank 1: question 1's short ones and question 0 again
    (as when a small dataset repeats a question in one batch: its s0 is on both ranks)."""
    r0 = [char_episode(TASK, 0, "Q0\nSolution:", f"\nx = {j}\ny = {j + 1}\nz = {j + 2}\nw = 3\n#### 4", j=j)
          for j in range(4)]
    r1 = [char_episode(TASK, 1, "Q1\nSolution:", f"\nx = {j}\ny = 2\n#### 4", j=j) for j in range(2)]
    r1 += [char_episode(TASK, 0, "Q0\nSolution:", "\nx = 9\ny = 2\n#### 4", j=4)]
    return [r0, r1]


def run_ranks(balance: str | None, budget: MCBudget, iteration: int = 2, seed_of=mc_seed):
    """MC on two thread-ranks; per rank: (the episodes' step values, prompts the engine ran, stats)."""
    eps = rank_episodes()
    group = ThreadGroup(2)
    engines = [SeededEngine(), SeededEngine()]
    stats: list = [None, None]

    def work(rank):
        stats[rank] = estimate_mc_values(
            engines[rank], TASK, CharTokenizer(), ROWS, eps[rank], k=budget.k, cap=None, temperature=0.6,
            top_p=0.9, max_new_tokens=16, max_sequence_length=1000, stop=[], seed=seed_of(11, rank, iteration),
            budget=budget, group=group.member(rank), **({} if balance == "default" else {"balance": balance}))

    group.run(work)
    return [[e.step_values for e in eps[r]] for r in range(2)], [e.prompts for e in engines], stats


BUDGETS = {"fixed": MCBudget(k=5),
           "adaptive": MCBudget(k=5, adaptive=True, k_min=2, k_max=8, target_halfwidth=0.3)}


@pytest.mark.parametrize("budget", BUDGETS, ids=list(BUDGETS))
@pytest.mark.parametrize("balance", ["tokens", "count"])
def test_balanced_values_equal_unbalanced_and_one_process(balance, budget):
    budget = BUDGETS[budget]
    values_off, prompts_off, stats_off = run_ranks(None, budget)
    values_on, prompts_on, stats_on = run_ranks(balance, budget)
    assert values_on == values_off
    # one process with every episode: the same values again
    single = [e for eps in rank_episodes() for e in eps]
    estimate_mc_values(SeededEngine(), TASK, CharTokenizer(), ROWS, single, k=budget.k, cap=None, temperature=0.6,
                       top_p=0.9, max_new_tokens=16, max_sequence_length=1000, stop=[], seed=mc_seed(11, 0, 2),
                       budget=budget)
    assert [e.step_values for e in single] == values_on[0] + values_on[1]
    # the values are not all alike (the check above has something to compare)
    assert len({v for vals in values_on for ep in vals for v in ep}) > 2


def test_balanced_runs_each_state_once_and_splits_the_work():
    budget = BUDGETS["fixed"]
    _, prompts_off, stats_off = run_ranks(None, budget)
    _, prompts_on, stats_on = run_ranks("count", budget)
    # rank 0: s0..s3 of 4 responses → 1 + 4·3 = 13 states; rank 1: 2 responses of 2 steps → 3 states,
    # and question 0's s0 and its own s1 → 2 states: 18 unbalanced, 17 unique over both ranks
    assert [len(p) for p in prompts_off] == [13, 5]
    assert stats_off[0]["mc/imbalance"] > 1.0 and "mc/imbalance" in stats_off[1]
    assert sorted(len(p) for p in prompts_on) == [8, 9]
    assert not set(prompts_on[0]) & set(prompts_on[1])
    assert set(prompts_on[0]) | set(prompts_on[1]) == set(prompts_off[0]) | set(prompts_off[1])
    assert sum(s["mc/unique_states"] for s in stats_on) == 17 and sum(s["mc/rollouts"] for s in stats_on) == 17 * 5
    assert [s["mc/states"] for s in stats_on] == [s["mc/states"] for s in stats_off] == [16, 6]  # naive: 4·4, 3·2
    assert stats_on[0]["mc/imbalance"] == stats_on[1]["mc/imbalance"]


def test_with_several_processes_mc_is_balanced_by_tokens_by_default():
    budget = BUDGETS["fixed"]
    values, prompts, stats = run_ranks("default", budget)
    values_tokens, prompts_tokens, _ = run_ranks("tokens", budget)
    assert values == values_tokens and prompts == prompts_tokens
    assert sum(s["mc/unique_states"] for s in stats) == 17  # deduplicated over both ranks
    # the split is shuffled with the iteration's MC seed: another iteration, another split
    _, prompts_next, _ = run_ranks("default", budget, iteration=3)
    assert set(prompts_next[0]) != set(prompts[0])


def test_free_episode_outcomes_are_pooled_over_ranks():
    """With `include_episode_outcome` a state on two ranks counts the responses of both: question
    0's s0 is passed by 4 responses on rank 0 and 1 on rank 1, so it has 5 free samples."""
    budget = MCBudget(k=2, include_episode_outcome=True)
    eps = rank_episodes()
    for e in eps[0]:
        e.reward = 1.0
    group = ThreadGroup(2)
    done = {}

    def work(rank):
        estimate_mc_values(SeededEngine(), TASK, CharTokenizer(), ROWS, eps[rank], k=2, cap=None, temperature=0.6,
                           top_p=0.9, max_new_tokens=16, max_sequence_length=1000, stop=[], seed=3, budget=budget,
                           group=group.member(rank), balance="tokens")
        done[rank] = True

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert done == {0: True, 1: True}
    assert eps[0][0].meta["mc_samples"][0] == eps[1][2].meta["mc_samples"][0] == 5 + 2
    assert eps[0][0].step_values[0] == eps[1][2].step_values[0]


# ---- engines: a request's samples are its own ------------------------------------------------
def test_row_seeded_sampler_draws_from_the_nucleus_with_hand_computed_odds():
    import torch

    from vineppo.engine.hf import RowSeededSampler

    # probabilities 0.5, 0.3, 0.2 at T = 1; top_p 0.7 keeps the first two (0.5 < 0.7, then 0.8 ≥ 0.7)
    logits = torch.log(torch.tensor([[0.3, 0.5, 0.2]])).repeat(4000, 1)
    out = RowSeededSampler(list(range(4000)), temperature=1.0, top_p=0.7)(None, logits)
    assert torch.isfinite(out).sum(dim=-1).eq(1).all()
    counts = torch.bincount(out.argmax(dim=-1), minlength=3).tolist()
    assert counts[2] == 0
    assert counts[1] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)
    # the same seed gives the same draw, whatever the other rows
    again = RowSeededSampler([17], temperature=1.0, top_p=0.7)(None, logits[:1])
    assert again.argmax().item() == out[17].argmax().item()


def test_hf_engine_request_seeds_make_a_prompts_samples_its_own(hf_engine, tiny_tokenizer, one_torch_thread):
    from vineppo.tokens import encode_prompt

    prompts = [encode_prompt(tiny_tokenizer, f"[MATH_TASK] Problem:\nWhat is {i} + {i}?\n\nSolution:" + "\n" * i)
               for i in range(5)]

    def sample(ps, seeds, batch=64):
        params = SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=10, seed=1, request_seeds=tuple(seeds))
        before = hf_engine.max_batch_size
        hf_engine.max_batch_size = batch
        try:
            return [[c.token_ids for c in o] for o in hf_engine.generate(ps, params)]
        finally:
            hf_engine.max_batch_size = before

    all_five = sample(prompts, range(100, 105))
    assert sample([prompts[3], prompts[0]], [103, 100]) == [all_five[3], all_five[0]]  # alone, reordered
    assert sample(prompts, range(100, 105), batch=3) == all_five  # other batches
    assert all(a != b for a, b in all_five)  # the two samples of a prompt differ
    assert sample([prompts[3]], [999]) != [all_five[3]]
    with pytest.raises(ValueError, match="2 seeds for 5 prompts"):
        sample(prompts, [1, 2])


@pytest.mark.vllm
def test_vllm_takes_the_request_seeds_on_gpu():
    from vineppo.engine.vllm import VLLMEngine

    eng = VLLMEngine.__new__(VLLMEngine)  # the parameter builder needs no running engine
    eng.is_cpu, eng.stop_token_ids, eng.shared_request_seed = False, {2}, False
    params = SamplingParams(n=3, temperature=0.6, top_p=0.9, max_new_tokens=8, seed=123, request_seeds=(41, 7))
    assert [p.seed for p in eng._vllm_params(params, 2)] == [41, 7]
    eng.shared_request_seed = True
    assert eng._vllm_params(params, 2).seed == 123
    eng.is_cpu, eng.shared_request_seed = True, False
    assert eng._vllm_params(params, 2).seed is None  # CPU: the engine's stream from `seed`


def test_balance_config_keys():
    from vineppo.config import ConfigError, load_config

    mc = load_config(None, ["model.name_or_path=x"]).mc
    assert mc.balance is True and mc.balance_split == "tokens"
    mc = load_config(None, ["model.name_or_path=x", "mc.balance=off", "mc.balance_split=count"]).mc
    assert mc.balance is False and mc.balance_split == "count"
    with pytest.raises(ConfigError, match="mc.balance_split"):
        load_config(None, ["model.name_or_path=x", "mc.balance_split=time"])


# ---- 2 CPU processes -------------------------------------------------------------------------
def _accelerate(*args: str) -> list[str]:
    """`accelerate launch` of 2 processes (a gloo group: no CUDA here), as tests/test_distributed.py."""
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
            str(REPO / "launch" / "cpu" / "ddp.yaml"), "--main_process_port", str(free_port()), *args]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.slow
def test_two_processes_balanced_equal_unbalanced_and_one_process(sft_gsm8k, tmp_path):
    """2 processes, a skewed batch (rank 0 the long solutions), the transformers engine with per-state
    seeds: balanced MC (by count, by tokens; fixed K and adaptive) gives the unbalanced values and
    those of one process running every state, each state runs once, and each rank runs about half."""
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO / "tests" / "scripts"))
    import mc_balance_worker as w
    from vineppo.engine import HFEngine

    model_dir, data_dir = sft_gsm8k
    _run(_accelerate(str(REPO / "tests" / "scripts" / "mc_balance_worker.py"), str(model_dir), str(data_dir),
                     str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for name in ("count", "tokens"):
        assert [r[name]["values"] for r in ranks] == [r["off"]["values"] for r in ranks], name
    assert [r["adaptive_tokens"]["values"] for r in ranks] == [r["adaptive_off"]["values"] for r in ranks]
    values = [v for r in ranks for ep in r["off"]["values"] for v in ep if v is not None]
    assert len(set(values)) > 1, values  # mixed values: the comparison has something to compare

    # one process, every episode of both ranks
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = get_task("gsm8k")
    rows = w.read_rows(data_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = HFEngine(model_dir, tok, progress=False)
        for name, _, adaptive in (("off", None, False), ("adaptive_off", None, True)):
            eps = w.rank_episodes(tok, task, rows, 0) + w.rank_episodes(tok, task, rows, 1)
            w.estimate(engine, task, tok, rows, eps, mc_seed(w.SEED, 0, w.ITERATION), adaptive)
            assert [e.step_values for e in eps] == ranks[0][name]["values"] + ranks[1][name]["values"], name
    finally:
        torch.set_num_threads(before)

    # the work: unbalanced, each rank its own states (s0 of rank 0's first question on both);
    # balanced, every unique state once, dealt out evenly
    own = [{tuple(p) for p in r["off"]["prompts"]} for r in ranks]
    unique = own[0] | own[1]
    assert len(unique) == len(own[0]) + len(own[1]) - 1
    assert len(own[0]) > 2 * len(own[1])  # the skew
    for name in ("count", "tokens"):
        ran = [[tuple(p) for p in r[name]["prompts"]] for r in ranks]
        assert not set(ran[0]) & set(ran[1]) and set(ran[0]) | set(ran[1]) == unique, name
        assert sum(r[name]["stats"]["mc/unique_states"] for r in ranks) == len(unique)
    counts = [len(r["count"]["prompts"]) for r in ranks]
    assert abs(counts[0] - counts[1]) <= 1, counts
    tokens = [len(r["tokens"]["prompts"]) for r in ranks]
    assert min(tokens) >= len(unique) // 4, tokens  # about half of the work, not every state on one rank


@pytest.mark.slow
def test_two_process_training_iteration_equals_one_process_mc(sft_gsm8k, tmp_path):
    """The loop's wiring: one VinePPO iteration in 2 processes (balanced MC, transformers engine);
    the MC values it dumped equal those one process computes for the same episodes with the
    run's settings and rank 0's MC seed."""
    import torch
    from transformers import AutoTokenizer

    from vineppo.config import load_config
    from vineppo.engine import HFEngine
    from vineppo.episodes import Episode
    from vineppo.loop import load_train_rows, mc_budget, training_task
    from vineppo.prompting import stop_strings
    from vineppo.tokens import token_char_starts

    out = tmp_path / "run"
    model_dir, data_dir = sft_gsm8k
    overrides = ["seed=77", f"model.name_or_path={model_dir}", "model.dtype=float32",
                 "model.gradient_checkpointing=false", "data.task=gsm8k", f"data.source={data_dir}",
                 "data.validation_size=0", "episodes.questions_per_iteration=4", "episodes.samples_per_question=2",
                 "ppo.minibatch_size=8", "ppo.micro_batch_size=2", "ppo.epochs=1", "sampling.max_new_tokens=48",
                 "mc.k=3", "engine.backend=hf", "iterations=1", "save_every=1", "logging.progress=false",
                 "logging.dump_episodes=true"]
    config = REPO / "configs" / "tiny" / "gsm8k_vineppo.yaml"
    _run(_accelerate("-m", "vineppo", "train", "--config", str(config), "--output-dir", str(out), *overrides))
    (row,) = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["mc/imbalance"] >= 1.0
    dumped = [json.loads(l) for r in range(2)
              for l in (out / "episodes" / f"iter_000001.rank{r}.jsonl").read_text().splitlines()]
    assert len(dumped) == 8

    cfg = load_config(config, overrides)
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = training_task(cfg, tok)
    rows = load_train_rows(cfg, task, tok)
    eps = [Episode(question_index=d["question_index"], sample_index=d["sample_index"], prompt_ids=d["prompt_ids"],
                   response_ids=d["response_ids"], response_text=d["response"], finished=d["finished"],
                   truncated=d["truncated"], reward=d["reward"], step_boundaries=d["step_boundaries"],
                   token_starts=token_char_starts(tok, d["response_ids"], d["response"])) for d in dumped]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = cfg.sampling
        estimate_mc_values(HFEngine(model_dir, tok, progress=False), task, tok, rows, eps, k=cfg.mc.k,
                           cap=cfg.mc.max_states_per_response, temperature=s.temperature, top_p=s.top_p,
                           max_new_tokens=s.max_new_tokens, max_sequence_length=s.max_sequence_length,
                           stop=stop_strings(cfg), seed=mc_seed(cfg.seed, 0, 0), budget=mc_budget(cfg))
    finally:
        torch.set_num_threads(before)
    assert [e.step_values for e in eps] == [d["step_values"] for d in dumped]
    assert len({v for d in dumped for v in d["step_values"] if v is not None}) > 1  # mixed: a real comparison
    assert row["mc/unique_states"] == len({(e.question_index, tuple(e.prompt_ids + e.response_ids[:t]))
                                           for e in eps for t in mc_state_token_counts(e, cfg.mc.max_states_per_response)})
