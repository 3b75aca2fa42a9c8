"""Adaptive vs fixed MC budget on a fixed batch of real MC states.

The states: episodes sampled by the demo's SFT start (the tiny Llama on the demo's arithmetic task,
a model that solves part of it; built once and cached like `vineppo demo` does) — every
deduplicated token prefix at a step start, as VinePPO's credit phase sees them. Truth: the mean
of `--truth-k` (64) rollouts per state. Then VinePPO's own `estimate_mc_values` runs on the same
episodes with fixed K = 9 and with the adaptive budget at its config defaults (`MCConfig`), each
`--repeats` times with different seeds; errors are mean absolute errors against the truth over the
unique states, averaged over the repeats; the token ratio is MC tokens of fixed K = 9 divided by
the adaptive scheme's.

Episodes and truth rollouts are cached next to the SFT start ($VINEPPO_CACHE_DIR or
~/.cache/vineppo), so a second run only re-runs the two schemes.

    python benchmarks/mc_budget.py [--questions 96] [--samples 4] [--repeats 8] [--backend auto|hf|vllm]
    python benchmarks/mc_budget.py --sweep      # offline: simulate budgets from the cached truth rollouts

The very last line is `mc_budget: fixed K=9 error E1, adaptive error E2, token ratio R`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRUTH_SEED = 424242


def say(msg: str) -> None:
    print(f"[mc_budget] {msg}", flush=True)


def sft_start(cache: Path):
    """The demo's SFT start and its RL rows (the demo's own data, split and cache key)."""
    from vineppo.demo import ensure_sft_start, load_demo_config
    from vineppo.demo.data import prepare_data

    dc = load_demo_config()
    demo, base = dc.demo, dc.train
    data = prepare_data(demo, base, cache / "mc-budget")  # the demo's own problems and validation carve
    rl_rows, val_rows = data.rl_rows, data.val_rows
    t0 = time.perf_counter()
    model_dir, info, cached = ensure_sft_start(demo, rl_rows, cache, stop_rows=val_rows)
    say(f"SFT start {'from the cache' if cached else f'built in {time.perf_counter() - t0:.0f}s'}: {model_dir} "
        f"(validation checks {info.get('validation_checks')})")
    return model_dir, rl_rows, base


def build_states(args, cache: Path):
    """(task, tokenizer, rows, episodes, truth rollouts per unique state, engine factory)."""
    from transformers import AutoTokenizer

    from vineppo.config import EngineConfig
    from vineppo.engine.base import SamplingParams
    from vineppo.engine.factory import make_engine
    from vineppo.episodes import Episode, generate_episodes
    from vineppo.mc import build_mc_requests, rollout_rewards
    from vineppo.tasks import get_task

    model_dir, rows, base = sft_start(cache)
    s = base.sampling
    sampling = dict(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                    max_sequence_length=s.max_sequence_length, stop=list(s.stop))
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = get_task(base.data.task)
    key = hashlib.sha256(json.dumps([str(model_dir), args.questions, args.samples, args.truth_k, sampling],
                                    sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"mc-budget-states-{key}.json"
    engine_cache: dict = {}

    def engine():
        if "e" not in engine_cache:
            engine_cache["e"] = make_engine(EngineConfig(backend=args.backend, kv_cache_memory_bytes=256 << 20,
                                                         max_batch_size=256),
                                            model_path=str(model_dir), tokenizer=tok, seed=0,
                                            max_model_len=s.max_sequence_length, progress=False)
        return engine_cache["e"]

    if path.is_file():
        data = json.loads(path.read_text())
        episodes = [Episode(**e) for e in data["episodes"]]
        say(f"states from the cache: {path}")
        return task, tok, rows, sampling, episodes, data["truth_rewards"], data["truth_tokens"], engine
    questions = random.Random(0).sample(range(len(rows)), args.questions)
    t0 = time.perf_counter()
    episodes, _ = generate_episodes(engine(), task, tok, rows, questions, samples_per_question=args.samples,
                                    seed=1, **sampling)
    requests, _, naive = build_mc_requests(episodes, None)
    say(f"{len(episodes)} episodes (reward mean {sum(e.reward for e in episodes) / len(episodes):.2f}), "
        f"{naive} states, {len(requests)} unique; truth: {args.truth_k} rollouts each ...")
    params = SamplingParams(n=args.truth_k, temperature=s.temperature, top_p=s.top_p,
                            max_new_tokens=s.max_new_tokens, stop=tuple(s.stop), seed=TRUTH_SEED)
    outs = engine().generate([r.prompt_ids + r.prefix_response_ids for r in requests], params)
    rewards = rollout_rewards(task, tok, rows, requests, outs, s.max_sequence_length)
    tokens = [[len(c.token_ids) for c in comps] for comps in outs]
    say(f"truth done in {time.perf_counter() - t0:.0f}s")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"episodes": [dataclasses.asdict(e) for e in episodes], "truth_rewards": rewards,
                               "truth_tokens": tokens}))
    os.replace(tmp, path)
    return task, tok, rows, sampling, episodes, rewards, tokens, engine


def unique_values(episodes) -> list[float]:
    """V̂ of each unique state, in `build_mc_requests` order (read back from the episodes)."""
    from vineppo.mc import build_mc_requests

    requests, per_episode, _ = build_mc_requests(episodes, None)
    vals: list[float | None] = [None] * len(requests)
    for e, ids in zip(episodes, per_episode):
        for k, ri in enumerate(ids):
            vals[ri] = e.step_values[k]
    return [float(v) for v in vals]


def run_scheme(engine, task, tok, rows, sampling, episodes, budget, seed):
    import copy

    from vineppo.mc import estimate_mc_values

    eps = copy.deepcopy(episodes)
    stats = estimate_mc_values(engine, task, tok, rows, eps, k=budget.k, cap=None, seed=seed, budget=budget,
                               **sampling)
    return unique_values(eps), stats


def mean_abs(a, b) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def simulate(rewards, tokens, budget, rng, episode_samples=None):
    """One budget replayed on the cached rollouts: a state's rollouts are drawn from its pool
    without replacement, and its truth is the mean of the pool's rollouts it did not use (so the
    two are independent). Returns (values, truth, tokens used)."""
    from vineppo.mc import wilson_halfwidth

    vals, truth, used_tokens = [], [], 0
    for si, (rs, ts) in enumerate(zip(rewards, tokens)):
        order = list(range(len(rs)))
        rng.shuffle(order)
        total, n, used = 0.0, 0, 0
        if episode_samples is not None:
            total, n = episode_samples[si]
        for r, size in enumerate(budget.round_sizes()):
            if budget.adaptive and r > 0 and wilson_halfwidth(total / n, n) <= budget.target_halfwidth:
                break
            for j in order[used: used + size]:
                total += rs[j]
                used_tokens += ts[j]
            used += size
            n += size
        vals.append(total / n)
        rest = order[used:]
        truth.append(sum(rs[j] for j in rest) / len(rest))
    return vals, truth, used_tokens


def sweep(rewards, tokens, episodes) -> None:
    from vineppo.mc import MCBudget, build_mc_requests

    _, per_episode, _ = build_mc_requests(episodes, None)
    outcome = [[0.0, 0] for _ in rewards]
    for e, ids in zip(episodes, per_episode):
        for ri in ids:
            outcome[ri][0] += e.reward
            outcome[ri][1] += 1
    reps = 40

    def score(budget, with_outcome=False):
        errs, toks = [], []
        for rep in range(reps):
            v, t, n = simulate(rewards, tokens, budget, random.Random(rep), outcome if with_outcome else None)
            errs.append(mean_abs(v, t))
            toks.append(n)
        return sum(errs) / reps, sum(toks) / reps

    e9, t9 = score(MCBudget(k=9))
    print(f"simulated from the cached pools ({reps} replays; truth = the rollouts of the pool a scheme did not use)")
    print(f"fixed K=9: error {e9:.4f}")
    print("k_min k_max target outcome | error  error/E9 token_ratio")
    for k_min in (2, 3, 4, 5):
        for k_max in (12, 16, 24):
            for target in (0.18, 0.2, 0.22, 0.24, 0.25, 0.26, 0.28, 0.3):
                for outc in (False, True):
                    b = MCBudget(adaptive=True, k_min=k_min, k_max=k_max, target_halfwidth=target)
                    if k_max > len(rewards[0]) // 2:
                        continue
                    e, t = score(b, outc)
                    if t9 / t >= 1.8 and e <= 1.15 * e9:
                        print(f"{k_min:5d} {k_max:5d} {target:6.2f} {str(outc):7s} | {e:.4f} {e / e9:6.3f} "
                              f"{t9 / t:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--truth-k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=8, help="runs of each scheme (different seeds), errors averaged")
    ap.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    ap.add_argument("--cache-dir", help="default: $VINEPPO_CACHE_DIR or ~/.cache/vineppo")
    ap.add_argument("--sweep", action="store_true", help="simulate budgets from the cached truth rollouts, then exit")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from vineppo.config import MCConfig, TrainConfig
    from vineppo.demo import default_cache_dir
    from vineppo.mc import MCBudget

    cache = Path(args.cache_dir or default_cache_dir()).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    task, tok, rows, sampling, episodes, rewards, tokens, engine = build_states(args, cache)
    truth = [sum(r) / len(r) for r in rewards]
    if args.sweep:
        sweep(rewards, tokens, episodes)
        return
    from vineppo.loop import mc_budget

    fixed = MCBudget(k=9)
    # the adaptive defaults, resolved exactly as a run with `mc.adaptive=true` resolves them
    adaptive = mc_budget(TrainConfig(mc=MCConfig(adaptive=True)))
    d = adaptive
    share_01 = sum(t in (0.0, 1.0) for t in truth) / len(truth)
    say(f"{len(truth)} unique states; true values: mean {sum(truth) / len(truth):.3f}, "
        f"{100 * share_01:.0f}% exactly 0 or 1 after {len(rewards[0])} rollouts")
    say(f"adaptive defaults: k_min {d.k_min}, k_max {d.k_max}, target half-width {d.target_halfwidth}, "
        f"include_episode_outcome {d.include_episode_outcome}")
    results = {}
    for name, budget in (("fixed", fixed), ("adaptive", adaptive)):
        errs, toks, rolls, calls = [], [], [], []
        for rep in range(args.repeats):
            vals, stats = run_scheme(engine(), task, tok, rows, sampling, episodes, budget, seed=1000 + rep)
            errs.append(mean_abs(vals, truth))
            toks.append(stats["mc/tokens"])
            rolls.append(stats["mc/rollouts_per_state_mean"])
            calls.append(stats["mc/engine_calls"])
            say(f"{name} run {rep + 1}: error {errs[-1]:.4f}, MC tokens {toks[-1]}, rollouts/state "
                f"{rolls[-1]:.2f} (max {stats['mc/rollouts_per_state_max']}), engine calls {calls[-1]}, "
                f"mean Wilson half-width {stats['mc/wilson_halfwidth_mean']:.3f}")
        results[name] = (sum(errs) / len(errs), sum(toks) / len(toks))
    engine().close()
    (e1, t1), (e2, t2) = results["fixed"], results["adaptive"]
    say(f"E2/E1 = {e2 / e1:.3f}")
    print(f"mc_budget: fixed K=9 error {e1:.4f}, adaptive error {e2:.4f}, token ratio {t1 / t2:.2f}")


if __name__ == "__main__":
    main()
