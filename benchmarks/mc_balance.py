"""Balanced MC across processes: the slowest rank's MC seconds over the ranks' mean, before
(each rank estimates its own episodes' states) and after (`mc.balance`: states deduplicated over
all ranks and dealt out evenly, by count or by expected tokens), on 2 CPU processes.

The batch is skewed on purpose: rank 0 gets the questions with the longest gold solutions, rank 1
those with the shortest, and each question's gold solution stands for a sampled response. A tiny
Llama is first fine-tuned on exactly these rows (nothing downloaded), so that a continuation from
a state runs about as long as the rest of that solution, as a trained policy's would. Each rank
then runs VinePPO's MC on its episodes (transformers engine, per-state seeds, fixed K) with the
same seed in every setting; the table shows each rank's states and rollout seconds, the slowest
rank's seconds over the mean, and the MC phase's wall-clock (rollouts + exchange + waiting for the
slowest rank); the last lines check that every setting gives the unbalanced values and print the
ratios.

    python benchmarks/mc_balance.py [--questions 8] [--k 4] [--sft-steps 80] [--repeats 2]

Wrap it in the shared lock on a shared machine (it launches 2 processes): timings are wall-clock
and move with the machine's load; the ratios compare settings run back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import gsm8k_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 20261206
#: (label, mc.balance_split or None = unbalanced)
SETTINGS = [("unbalanced", None), ("balanced/count", "count"), ("balanced/tokens", "tokens")]


def skewed_rows(questions: int) -> tuple[list[dict], list[list[int]]]:
    """Among the first 2000 GSM8K train rows, the `questions` with the longest gold solutions
    (rank 0) and the `questions` with the shortest (rank 1): rows, per rank their indices."""
    from vineppo.tasks import get_task

    task = get_task("gsm8k")
    pool = sorted(gsm8k_rows("train", 2000), key=lambda r: len(task.gold_solution(r)))
    rows = pool[-questions:][::-1] + pool[:questions]
    return rows, [list(range(questions)), list(range(questions, 2 * questions))]


def fine_tune(rows: list[dict], out: Path, steps: int) -> Path:
    from vineppo.sft import SFTConfig, sft
    from vineppo.tasks import get_task
    from vineppo.tiny import TinyModelConfig, build_model, build_tokenizer

    task = get_task("gsm8k")
    tok = build_tokenizer([task.prompt(r) + task.sft_target(r) for r in rows] * 4, 640)
    model = build_model(tok, TinyModelConfig(num_layers=2))
    sft(model, tok, task, rows, SFTConfig(max_steps=steps, batch_size=16, micro_batch_size=16, lr=3e-3),
        progress=False, out_dir=out)
    return out


def worker(model_dir: str, out: str, questions: int, k: int, repeats: int) -> None:
    """One rank (under `accelerate launch` of 2 CPU processes)."""
    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from vineppo.engine import HFEngine
    from vineppo.engine.base import SamplingParams
    from vineppo.episodes import Episode
    from vineppo.mc import MCBudget, estimate_mc_values
    from vineppo.mc_balance import RankGroup
    from vineppo.seeds import mc_seed
    from vineppo.tasks import get_task
    from vineppo.tokens import decode_response, encode_prompt, token_char_starts

    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    group = RankGroup.from_accelerator(state)
    if group.world != 2:
        raise SystemExit(f"expected 2 processes, got {group.world}")
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = get_task("gsm8k")
    rows, per_rank = skewed_rows(questions)
    episodes = []
    for q in per_rank[group.rank]:
        ids = tok(task.sft_target(rows[q]).rstrip("\n"), add_special_tokens=False)["input_ids"]
        text = decode_response(tok, ids)
        episodes.append(Episode(question_index=q, sample_index=0, prompt_ids=encode_prompt(tok, task.prompt(rows[q])),
                                response_ids=ids, response_text=text, finished=True, truncated=False, reward=1.0,
                                step_boundaries=task.split_steps(text), token_starts=token_char_starts(tok, ids, text)))
    engine = HFEngine(model_dir, tok, progress=False)
    engine.generate([episodes[0].prompt_ids], SamplingParams(n=2, temperature=0.6, max_new_tokens=8, seed=1))  # warm-up
    seed = mc_seed(SEED, group.rank, 0)
    results = []
    for rep in range(repeats):
        for label, split in SETTINGS:
            state.wait_for_everyone()
            t = time.perf_counter()
            stats = estimate_mc_values(engine, task, tok, rows, episodes, k=k, cap=None, temperature=0.6, top_p=0.9,
                                       max_new_tokens=256, max_sequence_length=1024, stop=["\n\n\nProblem:"],
                                       seed=seed, budget=MCBudget(k=k), group=group, balance=split)
            wall = time.perf_counter() - t
            state.wait_for_everyone()  # the phase ends for the iteration when the slowest rank is done
            phase = time.perf_counter() - t
            results.append({"repeat": rep, "setting": label, "states": stats["mc/unique_states"],
                            "tokens": stats["mc/tokens"],
                            "rollout": stats["mc/generate_seconds"] + stats["mc/grade_seconds"],
                            "imbalance": stats["mc/imbalance"], "wall": wall, "phase": phase,
                            "steps": sum(e.num_steps for e in episodes),
                            "values": [e.step_values for e in episodes]})
    Path(out, f"rank{group.rank}.json").write_text(json.dumps(results))
    state.wait_for_everyone()
    state.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=8, help="questions per rank")
    ap.add_argument("--k", type=int, default=4, help="MC rollouts per state")
    ap.add_argument("--sft-steps", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the three settings, back to back")
    ap.add_argument("--model", help="a model dir fine-tuned on skewed_rows (default: fine-tune one here)")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.questions, args.k, args.repeats)
        return

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    rows, _ = skewed_rows(args.questions)
    model = Path(args.model) if args.model else fine_tune(rows, Path(tmp.name) / "model", args.sft_steps)
    print(f"model: {model} ({'given' if args.model else f'fine-tuned {args.sft_steps} steps in {time.perf_counter() - t0:.0f} s'})")
    out = Path(tmp.name) / "out"
    out.mkdir()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # launch/cpu/ddp.yaml: 2 processes; with no CUDA they form a gloo group
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(REPO / "launch" / "cpu" / "ddp.yaml"), "--main_process_port", str(port), __file__, "--worker", str(model), str(out),
           "--questions", str(args.questions), "--k", str(args.k), "--repeats", str(args.repeats)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the 2-process run failed:\n{proc.stderr[-4000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    print(f"2 CPU processes, {args.questions} questions each, K={args.k}; rank 0 the longest gold solutions "
          f"({ranks[0][0]['steps']} steps), rank 1 the shortest ({ranks[1][0]['steps']} steps)")
    print(f"{'setting':<17}{'rep':>4}{'states r0/r1':>14}{'tokens r0/r1':>15}{'rollout s r0/r1':>18}"
          f"{'slowest/mean':>14}{'MC phase s':>12}")
    ratios: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
    phases: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
    same = True
    for i, (a, b) in enumerate(zip(*ranks)):
        label = a["setting"]
        ratio = a["imbalance"]
        ratios[label].append(ratio)
        phases[label].append(max(a["phase"], b["phase"]))
        rs = [a["rollout"], b["rollout"]]
        print(f"{label:<17}{a['repeat']:>4}{a['states']:>8}/{b['states']:<5}{a['tokens']:>9}/{b['tokens']:<5}"
              f"{'':>2}{rs[0]:>8.2f}/{rs[1]:<7.2f}{ratio:>14.2f}{phases[label][-1]:>12.2f}")
        base = ranks[0][i - i % len(SETTINGS)], ranks[1][i - i % len(SETTINGS)]
        same &= a["values"] == base[0]["values"] and b["values"] == base[1]["values"]
    print(f"values identical to the unbalanced run's, every setting: {'yes' if same else 'NO'}")
    mean = {label: sum(v) / len(v) for label, v in ratios.items()}
    phase = {label: sum(v) / len(v) for label, v in phases.items()}
    print("slowest rank's MC seconds / mean, before -> after: "
          + ", ".join(f"{label} {mean[label]:.2f}" for label, _ in SETTINGS))
    print("MC phase seconds (slowest rank, mean of repeats): "
          + ", ".join(f"{label} {phase[label]:.2f}" for label, _ in SETTINGS))


if __name__ == "__main__":
    main()
