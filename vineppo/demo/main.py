"""`run_demo`: the order of the demo's phases (data → SFT start → its evaluation → RL runs →
compare, plot, summary)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from vineppo.config import to_dict
from vineppo.demo.config import PLOT_FILE, SUMMARY_FILE, _fmt_seconds, _say, load_demo_config
from vineppo.demo.data import prepare_data
from vineppo.demo.evaluation import evaluate_sft
from vineppo.demo.report import _quiet_logs, final_table, plot_demo
from vineppo.demo.runs import _fresh_run_dir, _run_config, _start_background_runs, _train_runs
from vineppo.demo.sft_start import _TorchThreads, default_cache_dir, ensure_sft_start, pick_torch_threads


def run_demo(output_dir: str | Path = "vineppo-demo", *, config_path: str | Path | None = None,
             overrides: Sequence[str] = (), include_ppo: bool = True, cache_dir: str | Path | None = None,
             progress: bool = False, compare: bool = True) -> dict:
    """Run the whole demo (see the module docstring); returns the summary dict with extra details
    under "details". Pass@1 values are in percent on the demo's held-out test problems."""
    t_start = time.perf_counter()
    dc = load_demo_config(config_path, overrides)
    demo, base = dc.demo, dc.train
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cache_dir or demo.cache_dir or default_cache_dir()).expanduser().resolve()
    cache_root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _say(f"output: {out}  (config {dc.path}; load average {load:.2f} on {os.cpu_count()} CPUs)")
    _quiet_logs()

    threads = demo.torch_threads
    if threads == "auto":
        threads, timing = pick_torch_threads(demo.model)
        _say(f"torch threads for SFT and training: {threads} (a tiny-model step: "
             + ", ".join(f"{n} thread(s) {t:.2f}s" for n, t in timing.items()) + "; set demo.torch_threads to fix it)")
    with _TorchThreads(threads):
        # 1. data
        d = prepare_data(demo, base, out)
        data_dir, train_rows, test_rows, rl_rows, val_rows, splits = (
            d.data_dir, d.train_rows, d.test_rows, d.rl_rows, d.val_rows, d.splits)
        # 2. SFT start
        t0 = time.perf_counter()
        sft_dir, sft_info, sft_cached = ensure_sft_start(demo, rl_rows, cache_root, stop_rows=val_rows,
                                                         progress=progress)
        t_sft = time.perf_counter() - t0
        _say(f"SFT start {'reused from the cache' if sft_cached else 'trained and cached'}: {sft_dir} "
             f"({sft_info['steps']} steps, final loss {sft_info['final_loss']:.3f}"
             f"{'' if sft_cached else f', {_fmt_seconds(t_sft)}'})")

        # RL runs in other processes start now: their start-up overlaps the SFT evaluation
        algos = ["vineppo"] + (["ppo"] if include_ppo else [])
        if not include_ppo:
            _fresh_run_dir(out / "runs" / "ppo")  # no stale PPO run from an earlier demo
        parallel = demo.parallel_runs
        if parallel == "auto":
            parallel = (os.cpu_count() or 1) >= 2
        background = (_start_background_runs(base, algos, sft_dir, out, data_dir, splits, demo.eval)
                      if parallel else {})
        try:
            # 3. evaluate it
            t0 = time.perf_counter()
            sft_results, eval_cached = evaluate_sft(sft_dir, splits, data_dir, demo.eval,
                                                    _run_config(base, "vineppo", sft_dir, data_dir))
            from vineppo.evaluate import read_results

            sft_pass = {s: float(read_results(d)["pass@1"]) for s, d in sft_results.items()}
            _say(f"SFT start test pass@1 {100 * sft_pass['test']:.1f}% ({len(test_rows)} problems x "
                 f"{demo.eval.n_samples} samples, T={demo.eval.temperature}, top_p={demo.eval.top_p})"
                 f"{' (cached)' if eval_cached else f', {_fmt_seconds(time.perf_counter() - t0)}'}")

            # 4. RL runs
            with _TorchThreads(1 if background else None):
                runs = _train_runs(base, algos, sft_dir, out, splits, data_dir, demo.eval, sft_results,
                                   background)
        finally:
            for b in background.values():
                b.kill()

    # 5. compare table, plots, summary
    if compare:
        from vineppo.compare import compare as compare_runs

        _say("vineppo compare:")
        compare_runs([out / "runs" / a for a in algos], out / "compare", labels=algos)
    plot = plot_demo(out / PLOT_FILE, sft_pass["test"], runs, demo.eval, len(test_rows))
    seconds = time.perf_counter() - t_start
    summary = {"sft": round(100 * sft_pass["test"], 2),
               "ppo": round(100 * runs["ppo"]["test"], 2) if "ppo" in runs else None,
               "vineppo": round(100 * runs["vineppo"]["test"], 2),
               "seconds": round(seconds, 1)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    details = {"summary": summary, "sft_dir": str(sft_dir), "sft_cached": sft_cached, "sft": sft_info,
               "sft_pass@1": sft_pass, "eval": asdict(demo.eval), "test_problems": len(test_rows),
               "runs": {a: {k: v for k, v in r.items()} for a, r in runs.items()},
               "config": {"demo": asdict(demo), "train": to_dict(base)}, "plot": str(plot),
               "load_average_start": load}
    (out / "demo_details.json").write_text(json.dumps(details, indent=1, default=str) + "\n")
    sft_note = "(cached)" if sft_cached else f"(SFT {_fmt_seconds(t_sft)})"
    print()
    print(f"vineppo demo: held-out test pass@1, {len(test_rows)} problems x {demo.eval.n_samples} samples "
          f"(T={demo.eval.temperature}, top_p={demo.eval.top_p}), final checkpoints")
    print(final_table(sft_pass["test"], runs, sft_note))
    print(f"total {_fmt_seconds(seconds)}; SFT start cached in {sft_dir}")
    print(f"wrote {out / SUMMARY_FILE}, {plot}" + (f", {out / 'compare'}/" if compare else ""), flush=True)
    return {**summary, "details": details}
