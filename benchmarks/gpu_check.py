"""One-command GPU check: `python benchmarks/gpu_check.py` on a machine with one CUDA GPU.

Two tiers (docs/gpu-check.md says what each covers, how long it takes and what to send back):
- base, without vLLM: the transformers engine in bf16 on the GPU, the trainer in bf16 under one
  GPU, FSDP2, ZeRO-2, ZeRO-2 with optimizer offload and ZeRO-3 (one process each, NCCL), the
  VinePPO, PPO and GRPO loops, the streamed push, merged LoRA, reference offload, `--resume`, and
  the memory and speed of a ~0.5B model next to `vineppo plan`;
- vllm, with CUDA vLLM: CUDA graphs, sleep levels 1 and 2 with push and wake, merged and adapter
  LoRA through vLLM, the log-prob patch, flash-attn when installed.

Every training check runs two iterations and passes only if iteration 2, sampled with the weights
pushed after iteration 1, agrees with the trainer (`sync/logprob_gap` within the tolerance) while
the control (the gap a missing push would have left) does not. Every check runs in a process of
its own; `--keep DIR` keeps every log and gpu_check.json. First, with no GPU needed: DeepSpeed
and friends are installed from benchmarks/.gpu_wheels/ when missing (benchmarks/gpu_wheels.sh),
every module the checks import is imported, and the run table is validated. Without CUDA it then
prints `gpu_check: no CUDA device, nothing checked` and exits 0.

One line per check, the last `gpu_check: N passed, M failed` (", K not run" when the deadline
stopped some). Exit 0 when nothing failed, 1 when a check failed, 2 when nothing failed but the
deadline left checks not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpucheck.runner import (EXIT_FAILED, EXIT_OK, FAIL, PASS, Result, exit_status,  # noqa: E402
                                        format_result, results_json, run_checks, summary, write_result)
from benchmarks.gpucheck.table import (INPUTS, TABLE, EngineCheck, TableError, TrainRun, by_name,  # noqa: E402
                                       child_check, inputs_check, select, validate_table, with_inputs)

NO_CUDA = "gpu_check: no CUDA device, nothing checked"
#: default overall deadlines in seconds, counted from the start (the wheel install included)
DEADLINE = {"quick": 115.0, "base": 290.0, "all": 900.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py",
                                description="Check vineppo's CUDA paths on one GPU (docs/gpu-check.md).")
    p.add_argument("--tier", choices=["auto", "base", "vllm", "all"], default="auto",
                   help="base: without vLLM; vllm: only the vLLM checks; all: both (auto: all where vLLM is "
                        "installed, else base)")
    p.add_argument("--quick", action="store_true",
                   help="one streamed push, one VinePPO iteration after a push, the memory comparison (<= 2 min)")
    p.add_argument("--full", action="store_true", help="also every algorithm under every sharded strategy")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these checks (names as --list prints them)")
    p.add_argument("--list", action="store_true", help="print the checks that would run, and exit")
    p.add_argument("--deadline", type=float, default=None,
                   help="overall seconds from the start; checks not finished then are reported as not run "
                        f"(default {DEADLINE['quick']:.0f} with --quick, {DEADLINE['base']:.0f} for base, "
                        f"{DEADLINE['all']:.0f} with vLLM)")
    p.add_argument("--keep", metavar="DIR", help="keep every check's full log, run directory and gpu_check.json here")
    p.add_argument("--json", metavar="PATH", help="where gpu_check.json goes (default DIR/gpu_check.json with "
                                                  "--keep, else ./gpu_check.json)")
    p.add_argument("--jobs", type=int, default=None, help="checks at once (default 6 on a GPU, 1 on CPU)")
    p.add_argument("--wheels", metavar="DIR", default=None, help="the carried wheels (default benchmarks/.gpu_wheels)")
    p.add_argument("--sft-steps", type=int, default=None,
                   help="SFT steps of the tiny model before the training checks (default: enough for mixed rewards)")
    p.add_argument("--cpu-rehearsal", action="store_true",
                   help="run the checks on the CPU (slow; proves the check's own code, not the GPU paths)")
    # the parent starts each check as `--child NAME --work DIR --inputs DIR`
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- one check, in its own process -----------------------------------------------------------------
def prepare_main(args) -> int:
    """The "inputs" check: the tiny model every training check starts from, fine-tuned on the GPU
    when there is one (`prepare_sft`)."""
    import torch

    from benchmarks.gpucheck.children import prepare_sft

    result = Path(args.work) / "results" / f"{INPUTS}.json"
    device = "cuda" if torch.cuda.is_available() and not args.cpu_rehearsal else "cpu"
    try:
        f = prepare_sft(Path(args.inputs), device=device, sft_steps=args.sft_steps)
    except Exception as e:  # noqa: BLE001 - the traceback to the log, one line to the verdict
        traceback.print_exc()
        write_result(result, FAIL, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        return 1
    print(json.dumps(f), flush=True)
    write_result(result, PASS, f"tiny model ({f['params']} parameters), {f['sft_steps']} SFT steps in "
                               f"{f['sft_seconds']:.0f}s: reward rate {f['reward_rate']:.2f}, questions with mixed "
                               f"rewards {f['mixed_questions']:.2f}", f)
    return 0


def child_main(args) -> int:
    work, inputs = Path(args.work), Path(args.inputs)
    result = work / "results" / f"{args.child}.json"
    try:
        spec = by_name(args.child)
        if isinstance(spec, TrainRun):
            from benchmarks.gpucheck.children import run_training
            status, detail, measures = run_training(spec, work, inputs, cpu=args.cpu_rehearsal)
        elif isinstance(spec, EngineCheck):
            from benchmarks.gpucheck.children import run_engine_check
            status, detail, measures = run_engine_check(spec, work, inputs, cpu=args.cpu_rehearsal)
        else:
            from benchmarks.gpucheck.perf import run_perf_check
            status, detail, measures = run_perf_check(spec, work, inputs, cpu=args.cpu_rehearsal,
                                                      speed=not args.quick)
    except Exception as e:  # noqa: BLE001 - the traceback goes to the check's log, one line to the verdict
        traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write_result(result, FAIL, f"{type(e).__name__}: {first}")
        return 1
    write_result(result, status, detail, measures)
    return 0


# ---- before any GPU time: wheels, imports, the run table ----------------------------------------------
def preflight(args, tiers: tuple[str, ...]) -> list[Result]:
    from benchmarks.gpucheck import wheels

    out = []
    steps = [("wheels", lambda: wheels.install_missing(Path(args.wheels) if args.wheels else wheels.WHEELS)),
             ("imports", lambda: _imports(wheels, tiers)),
             ("run_table", lambda: (True, f"{validate_table()} checks load as `vineppo train` reads them, "
                                          f"their launch files exist"))]
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            ok, detail = step()
        except TableError as e:
            ok, detail = False, str(e)
        r = Result(name, PASS if ok else FAIL, detail, time.perf_counter() - t0)
        print(format_result(r), flush=True)
        out.append(r)
        if not ok:
            break
    return out


def _imports(wheels, tiers) -> tuple[bool, str]:
    ok, detail = wheels.import_all()
    if ok and "vllm" in tiers and wheels.missing(["vllm"]):
        return False, "vLLM is not installed: the vllm tier needs CUDA vLLM (pip install -e '.[vllm]'); use --tier base"
    return ok, detail


def _device_info(cuda: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, device_memory_bytes=props.total_memory)
    for m in ("transformers", "accelerate", "peft", "deepspeed", "vllm", "flash_attn"):
        try:
            info[m] = __import__(m).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as None
            info[m] = None
    return info


def main(argv=None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    if args.sft_steps is None:
        from benchmarks.gpucheck.children import SFT_STEPS

        args.sft_steps = SFT_STEPS
    if args.child:
        return child_main(args)
    if args.prepare:
        return prepare_main(args)
    import importlib.util

    vllm_here = importlib.util.find_spec("vllm") is not None
    tier = args.tier if args.tier != "auto" else ("all" if vllm_here else "base")
    tiers = {"base": ("base",), "vllm": ("vllm",), "all": ("base", "vllm")}[tier]
    try:
        specs = select(TABLE, tiers, quick=args.quick, full=args.full, names=args.only)
    except TableError as e:
        print(f"gpu_check: {e}")
        return EXIT_FAILED
    if args.list:
        for s in specs:
            print(f"{s.name}  ({type(s).__name__}, {'quick, ' if s.quick else ''}backend {s.backend})")
        return EXIT_OK
    results = preflight(args, tiers)
    if any(r.status == FAIL for r in results):
        print(summary(results))
        return EXIT_FAILED
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_rehearsal:
        print(NO_CUDA)
        return EXIT_OK
    deadline = args.deadline if args.deadline is not None else DEADLINE["quick" if args.quick else tier]
    jobs = args.jobs or (6 if cuda and not args.cpu_rehearsal else 1)
    keep = Path(args.keep).resolve() if args.keep else None
    workdir = keep if keep else Path(tempfile.mkdtemp(prefix="vineppo-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else (workdir / "gpu_check.json" if keep else Path("gpu_check.json"))
    inputs = Path(tempfile.mkdtemp(prefix="vineppo-gpu-check-inputs-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "tier": tier, "quick": args.quick, "full": args.full,
            "deadline_s": deadline, "jobs": jobs, "cpu_rehearsal": args.cpu_rehearsal, **_device_info(cuda)}
    # SIGTERM (a time limit around this script) unwinds like Ctrl-C: the running checks are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        def report(r: Result) -> None:
            print(format_result(r), flush=True)
            results.append(r)
            json_path.write_text(json.dumps(results_json(results, **info), indent=1, default=str))

        from benchmarks.gpucheck.children import prepare_base

        prepare_base(inputs)  # data, tokenizer, the random-init tiny model: seconds, on the CPU
        checks = [child_check(s, workdir, inputs, cpu=args.cpu_rehearsal, quick=args.quick) for s in specs]
        checks = with_inputs(checks, inputs_check(workdir, inputs, args.sft_steps, cpu=args.cpu_rehearsal))
        run_checks(checks, workdir, t_start + deadline, jobs=jobs, report=report, cwd=ROOT)
    finally:
        shutil.rmtree(inputs, ignore_errors=True)
    info["seconds"] = round(time.monotonic() - t_start, 1)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results_json(results, **info), indent=1, default=str))
    status = exit_status(results)
    if keep is None:
        if status == EXIT_OK:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"gpu_check: logs kept in {workdir} (not everything passed)", flush=True)
    print(f"gpu_check: results in {json_path}", flush=True)
    print(summary(results), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
