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
from vineppo.config import TrainConfig
from vineppo.demo.config import PLOT_FILE, SUMMARY_FILE, DemoSettings, _fmt_seconds, _say, load_demo_config
from vineppo.demo.data import DemoSplits, prepare_data
from vineppo.demo.evaluation import evaluate_sft
from vineppo.demo.lengths import BY_OPS_PLOT_FILE, by_ops_line, by_ops_summary, plot_by_ops
from vineppo.demo.report import _quiet_logs, final_table, method_stats, method_summary, plot_demo
from vineppo.demo.runs import RunQueue, _fresh_run_dir, _run_config, plan_runs
from vineppo.demo.values import VALUES_PLOT_FILE, plot_values, probe_line, probe_summary
from vineppo.demo.sft_start import (_TorchThreads, default_cache_dir, ensure_sft_continued, ensure_sft_start,
                                    pick_torch_threads)


def run_demo(output_dir: str | Path = "vineppo-demo", *, config_path: str | Path | None = None,
             overrides: Sequence[str] = (), include_ppo: bool = True, cache_dir: str | Path | None = None,
             progress: bool = False, compare: bool = True, seeds: int | None = None,
             algorithms: Sequence[str] | None = None) -> dict:
    """Run the whole demo (see the package docstring); returns the summary dict with extra details
    under "details". Pass@1 values are in percent on the demo's held-out test problems.
    `seeds` / `algorithms` override `demo.seeds` / `demo.algorithms`; `include_ppo=False` drops PPO."""
    t_start = time.perf_counter()
    extra = ([f"demo.seeds={seeds}"] if seeds is not None else []) + (
        [f"demo.algorithms=[{','.join(algorithms)}]"] if algorithms is not None else [])
    dc = load_demo_config(config_path, [*overrides, *extra])
    demo, base = dc.demo, dc.train
    algos = [a for a in demo.algorithms if include_ppo or a != "ppo"]
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
        _say(f"torch threads for SFT: {threads} (a tiny-model step: "
             + ", ".join(f"{n} thread(s) {t:.2f}s" for n, t in timing.items())
             + "; the SFT start now depends on the machine: set demo.torch_threads to a number to fix it)")
    with _TorchThreads(threads):
        # 1. data
        d = prepare_data(demo, base, out)
        data_dir, test_rows, rl_rows, val_rows, splits = d.data_dir, d.test_rows, d.rl_rows, d.val_rows, d.splits
        ctrl = prepare_data(demo, base, out, control=True) if demo.control.enabled else None
        # 2. SFT start (with the control's short-chain train problems when the control is on: one
        # start for both)
        sft_rows = rl_rows + (ctrl.rl_rows if ctrl else [])
        t0 = time.perf_counter()
        sft_dir, sft_info, sft_cached = ensure_sft_start(demo, sft_rows, cache_root, stop_rows=val_rows,
                                                         progress=progress)
        t_sft = time.perf_counter() - t0
        _say(f"SFT start {'reused from the cache' if sft_cached else 'trained and cached'}: {sft_dir} "
             f"({sft_info['steps']} steps with {threads or 'default'} torch thread(s), final loss "
             f"{sft_info['final_loss']:.3f}{'' if sft_cached else f', {_fmt_seconds(t_sft)}'})")

        # 3. RL runs start now in their own processes (overlapping the evaluations below)
        jobs = plan_runs(base, algos, demo.seeds, sft_dir, data_dir)
        names = {j.name for j in jobs}
        for stale in sorted((out / "runs").glob("*/")) if (out / "runs").is_dir() else []:
            if stale.name not in names:
                _fresh_run_dir(stale)  # no run of an earlier demo left behind
        parallel = demo.parallel_runs
        if parallel == "auto":
            parallel = (os.cpu_count() or 1) >= 2
        queue = RunQueue(jobs, out, splits, data_dir, demo.eval, 2 if parallel else 1)
        try:
            queue.fill()
            # 4. the SFT start and the SFT-continued control, evaluated the same way as the RL runs;
            # one torch thread while the RL processes train (more would spin-wait on busy cores)
            with _TorchThreads(1):
                eval_cfg = _run_config(base, "vineppo", sft_dir, data_dir)
                from vineppo.evaluate import read_results

                t0 = time.perf_counter()
                sft_results, eval_cached = evaluate_sft(sft_dir, splits, data_dir, demo.eval, eval_cfg)
                sft_pass = {s: float(read_results(r)["pass@1"]) for s, r in sft_results.items()}
                _say(f"SFT start test pass@1 {100 * sft_pass['test']:.1f}% ({len(test_rows)} problems x "
                     f"{demo.eval.n_samples} samples, T={demo.eval.temperature}, top_p={demo.eval.top_p})"
                     f"{' (cached)' if eval_cached else f', {_fmt_seconds(time.perf_counter() - t0)}'}")
                cont_steps = (jobs[0].cfg.total_optimizer_steps if demo.sft_continued_steps is None
                              else demo.sft_continued_steps)
                cont = None
                if cont_steps > 0:
                    cont_dir, cont_info, _ = ensure_sft_continued(demo, sft_dir, sft_rows, cont_steps)
                    cont_results, _ = evaluate_sft(cont_dir, splits, data_dir, demo.eval, eval_cfg)
                    cont = {"dir": str(cont_dir), "steps": cont_steps, "info": cont_info,
                            "pass@1": {s: float(read_results(r)["pass@1"]) for s, r in cont_results.items()}}
                    _say(f"SFT continued ({cont_steps} more SFT steps): test pass@1 {100 * cont['pass@1']['test']:.1f}%")
            # 5. wait for the RL runs
            with _TorchThreads(1):
                runs = queue.wait_all(sft_results)
        finally:
            queue.kill()

    # 6. compare table, plots, summary (of the main runs)
    if compare:
        from vineppo.compare import compare as compare_runs

        _say("vineppo compare:")
        compare_runs([out / "runs" / j.name for j in jobs], out / "compare", labels=[j.name for j in jobs])
    task = ("synthetic arithmetic" if demo.data.task == "arithmetic" else
            f"arithmetic chains of {demo.data.min_ops}-{demo.data.max_ops} operations")
    plot = plot_demo(out / PLOT_FILE, sft_pass["test"], runs, demo.eval, len(test_rows),
                     sft_continued=cont["pass@1"]["test"] if cont else None, task=task)
    seconds = time.perf_counter() - t_start
    stats = method_stats(runs)
    summary = {"sft": round(100 * sft_pass["test"], 2),
               "sft_continued": round(100 * cont["pass@1"]["test"], 2) if cont else None,
               **method_summary(runs, demo.seeds), "probe": probe_summary(runs), "seconds": round(seconds, 1)}
    values_plot = plot_values(out / VALUES_PLOT_FILE, runs)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")  # rewritten with the control below
    if ctrl is not None:
        _say(f"main runs done ({_fmt_seconds(seconds)}): {json.dumps(summary)}; now the short-chain control")
    # 7. the short-chain control: every method again, from the same start, on short chains
    control = None
    if ctrl is not None:
        control = _run_control(ctrl, demo, base, algos, sft_dir, out, 2 if parallel else 1)
        seconds = time.perf_counter() - t_start
        summary["control"] = control["summary"]
        summary["seconds"] = round(seconds, 1)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    # 8. chain tasks: every method's test pass@1 by the problem's length, main runs and control
    by_ops = by_ops_plot = None
    if demo.data.task == "chain":
        by_ops = by_ops_summary([(runs, test_rows)] + ([(control["runs"], ctrl.test_rows)] if control else []))
        by_ops_plot = plot_by_ops(out / BY_OPS_PLOT_FILE, by_ops)
        summary["by_ops"] = by_ops
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    details = {"summary": summary, "sft_dir": str(sft_dir), "sft_cached": sft_cached, "sft": sft_info,
               "sft_threads": threads, "sft_pass@1": sft_pass, "sft_continued": cont, "eval": asdict(demo.eval),
               "test_problems": len(test_rows), "runs": runs, "control": control,
               "config": {"demo": asdict(demo), "train": to_dict(base)}, "plot": str(plot),
               "values_plot": None if values_plot is None else str(values_plot),
               "by_ops_plot": None if by_ops_plot is None else str(by_ops_plot),
               "load_average_start": load}
    (out / "demo_details.json").write_text(json.dumps(details, indent=1, default=str) + "\n")
    sft_note = "(cached)" if sft_cached else f"(SFT {_fmt_seconds(t_sft)})"
    print()
    print(f"vineppo demo: held-out test pass@1, {len(test_rows)} problems x {demo.eval.n_samples} samples "
          f"(T={demo.eval.temperature}, top_p={demo.eval.top_p}), final checkpoints, "
          f"{demo.seeds} RL seed(s) per method")
    print(final_table(sft_pass["test"], stats, sft_note, sft_continued=cont["pass@1"]["test"] if cont else None,
                      sft_continued_steps=cont_steps, diff=summary["vineppo_minus_ppo"]))
    if summary["probe"] is not None:
        print(probe_line(summary["probe"]))
    if control is not None:
        c = demo.control
        print(f"control: short chains ({c.min_ops}-{c.max_ops} operations), same SFT start, "
              f"{len(ctrl.test_rows)} test problems")
        print(final_table(control["sft_pass@1"]["test"], method_stats(control["runs"]), "(same start)",
                          diff=control["summary"]["vineppo_minus_ppo"]))
    if by_ops is not None:
        print(by_ops_line(by_ops))
    print(f"total {_fmt_seconds(seconds)}; SFT start cached in {sft_dir}")
    print(f"wrote {out / SUMMARY_FILE}, {plot}" + (f", {values_plot}" if values_plot else "")
          + (f", {by_ops_plot}" if by_ops_plot else "")
          + (f", {out / 'compare'}/" if compare else ""), flush=True)
    return {**summary, "details": details}


def _run_control(ctrl: DemoSplits, demo: DemoSettings, base: TrainConfig, algos: list[str], sft_dir: Path,
                 out: Path, parallel: int) -> dict:
    """The short-chain control: each method for each seed from the same SFT start, on the control's
    problems (runs in DIR/control/runs); its SFT-start evaluation and summary (the main summary's
    method keys)."""
    from vineppo.evaluate import read_results

    jobs = plan_runs(base, algos, demo.seeds, sft_dir, ctrl.data_dir)
    queue = RunQueue(jobs, out / "control", ctrl.splits, ctrl.data_dir, demo.eval, parallel)
    try:
        queue.fill()
        with _TorchThreads(1):
            eval_cfg = _run_config(base, "vineppo", sft_dir, ctrl.data_dir)
            results, _ = evaluate_sft(sft_dir, ctrl.splits, ctrl.data_dir, demo.eval, eval_cfg)
            sft_pass = {s: float(read_results(r)["pass@1"]) for s, r in results.items()}
            _say(f"control: SFT start test pass@1 {100 * sft_pass['test']:.1f}% on short chains")
            runs = queue.wait_all(results)
    finally:
        queue.kill()
    summary = {"sft": round(100 * sft_pass["test"], 2), **method_summary(runs, demo.seeds),
               "probe": probe_summary(runs), "min_ops": demo.control.min_ops, "max_ops": demo.control.max_ops,
               "test_problems": len(ctrl.test_rows)}
    return {"summary": summary, "sft_pass@1": sft_pass, "runs": runs}
