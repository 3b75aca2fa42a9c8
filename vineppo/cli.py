"""`vineppo train|eval|compare|demo|sft` (also `python -m vineppo ...`, `accelerate launch -m vineppo ...`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _train(args) -> int:
    from vineppo.config import load_config
    from vineppo.loop import train

    from vineppo.data import DataError
    from vineppo.plan import MemoryPlanError
    from vineppo.tasks.custom import MissingSolutionError

    from vineppo.distributed import name_timeout_setting
    from vineppo.shared_dir import RunDirNotShared

    cfg = load_config(args.config, args.overrides)
    try:
        with name_timeout_setting(cfg):
            result = train(cfg, args.output_dir, resume=args.resume)
    except (DataError, MissingSolutionError, FileNotFoundError, FileExistsError, MemoryPlanError,
            RunDirNotShared) as e:
        # Bad data (file, line, field) or paths: one line for the user, not a traceback.
        kind = "data error" if isinstance(e, (DataError, MissingSolutionError)) else "error"
        print(f"vineppo train: {kind}: {e}", file=sys.stderr)
        return 2
    if result.stopped:  # a stop request (Slurm's time-limit signal): checkpointed, resume later
        print(f"vineppo train: stopped on request at {result.final_checkpoint}; continue with --resume",
              file=sys.stderr)
    return 0


def _eval(args) -> int:
    import logging

    from vineppo.data import DataError
    from vineppo.evaluate import (EvalError, data_spec, engine_config, evaluate_checkpoint, evaluate_run,
                                  grading_mode, read_run_config, run_dir_of)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sampling = dict(n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, seed=args.seed,
                    max_sequence_length=args.max_sequence_length, max_problems=args.max_problems,
                    unfinished=args.unfinished)
    try:
        if args.run is not None:
            if args.output_dir is not None:
                raise EvalError("--output-dir is for --checkpoint; a run's results go under each checkpoint")
            where = f"{args.run}/config.yaml"
            ecfg = engine_config(read_run_config(args.run), where, backend=args.backend,
                                 tensor_parallel_size=args.tensor_parallel_size,
                                 gpu_memory_utilization=args.gpu_memory_utilization)
            done = evaluate_run(args.run, args.task, args.split, data_source=args.data_source, engine_cfg=ecfg,
                                force=args.force, include_initial=args.include_initial, grading=args.grading,
                                every=args.every, workers=args.workers, train_subset=args.train_subset,
                                train_subset_seed=args.train_subset_seed, **sampling)
            for r in done:
                print(f"{r['checkpoint']} {r['split']}: pass@1 {100 * r['pass@1']:.2f} "
                      f"maj@{r['n_samples']} {100 * r[f'maj@{args.n_samples}']:.2f}")
            print(f"evaluated {len(done)} (checkpoint, split) pairs; already evaluated ones were skipped")
            return 0
        if args.every is not None or args.workers is not None:
            raise EvalError("--every and --workers are for --run (a sweep over a run's checkpoints)")
        run = run_dir_of(args.checkpoint)
        run_cfg = read_run_config(run) if run is not None else {}
        where = f"{run}/config.yaml" if run is not None else "--checkpoint"
        spec = data_spec(run_cfg, task=args.task, source=args.data_source, where=where,
                         train_subset=args.train_subset, train_subset_seed=args.train_subset_seed)
        ecfg = engine_config(run_cfg, where, backend=args.backend, tensor_parallel_size=args.tensor_parallel_size,
                             gpu_memory_utilization=args.gpu_memory_utilization)
        for split in args.split:
            r = evaluate_checkpoint(args.checkpoint, spec.task, split, data_source=spec.source,
                                    out_dir=f"{args.output_dir}/{split}" if args.output_dir else None,
                                    engine_cfg=ecfg, validation_size=spec.validation_size,
                                    validation_seed=spec.validation_seed, spec=spec,
                                    grading=args.grading or grading_mode(run_cfg, where), **sampling)
            print(f"{args.checkpoint} {split}: pass@1 {100 * r['pass@1']:.2f} "
                  f"maj@{args.n_samples} {100 * r[f'maj@{args.n_samples}']:.2f} "
                  f"pass@{args.n_samples} {100 * r[f'pass@{args.n_samples}']:.2f}")
        return 0
    except (EvalError, DataError, FileNotFoundError) as e:
        print(f"vineppo eval: error: {e}", file=sys.stderr)
        return 2


def _compare(args) -> int:
    import logging

    from vineppo.compare import CompareError, compare

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        compare(args.runs, args.output_dir, labels=args.labels, iteration_grid=args.iteration_grid)
    except CompareError as e:
        print(f"vineppo compare: error: {e}", file=sys.stderr)
        return 2
    return 0


def _sft(args) -> int:
    import logging

    from vineppo.config import ConfigError
    from vineppo.data import DataError
    from vineppo.sft import SFTConfig, sft_from_pretrained
    from vineppo.tasks.custom import MissingSolutionError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = SFTConfig(epochs=args.epochs, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                    lr=args.lr, warmup_ratio=args.warmup_ratio, max_length=args.max_length, seed=args.seed,
                    max_steps=args.max_steps, autocast_dtype=None if args.autocast == "none" else args.autocast,
                    lr_schedule=args.lr_schedule, group_by_length=args.group_by_length,
                    warmup_shape=args.warmup_shape, loss_reduction=args.loss_reduction, drop_last=args.drop_last,
                    target_template=args.target_template)
    prompt = None
    if args.chat:
        from vineppo.config import PromptConfig

        prompt = PromptConfig(chat=True, system=args.system)
    try:
        info = sft_from_pretrained(args.model, args.task, args.output_dir, cfg, data_source=args.data_source,
                                   validation_size=args.validation_size, max_train_rows=args.max_train_rows,
                                   dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
                                   attn_implementation=args.attn_implementation, overwrite=args.overwrite,
                                   question_field=args.question_field, answer_field=args.answer_field,
                                   solution_field=args.solution_field, prompt=prompt)
    except (FileExistsError, FileNotFoundError, DataError, MissingSolutionError, ConfigError) as e:
        print(f"vineppo sft: error: {e}", file=sys.stderr)
        return 2
    print(f"sft: {info['steps']} steps, final loss {info['final_loss']:.4f}, {info['seconds']:.0f}s -> {args.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vineppo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run VinePPO / PPO iterations")
    t.add_argument("--config", required=True, help="YAML config (see configs/)")
    t.add_argument("--output-dir", required=True, help="run directory (config.yaml, metrics.jsonl, checkpoints/)")
    t.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. iterations=2 mc.k=3 optim.lr=1e-5")
    t.set_defaults(func=_train)
    _add_eval_parser(sub)
    _add_compare_parser(sub)
    _add_sft_parser(sub)
    _add_demo_parser(sub)
    _add_plan_parser(sub)
    return p


def _add_eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="evaluate checkpoints: pass@1 over n samples, maj@n, pass@n")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="run directory: every complete checkpoint not yet evaluated")
    what.add_argument("--checkpoint", help="one model directory (a run checkpoint or any HF model dir)")
    e.add_argument("--task", choices=["gsm8k", "math"], help="default: the run's data.task")
    e.add_argument("--split", nargs="+", default=["test"], choices=["test", "validation", "train"],
                   help="one or more splits (default test; select checkpoints with validation; train: a fixed "
                        "seeded subset of the train split: train minus the validation carve, see --train-subset)")
    e.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="--split train evaluates N train rows chosen by a seeded hash of the question, the same "
                        "rows for every checkpoint, run and process (default: the official evaluation's "
                        "subset size, MATH 500, GSM8K 373, other tasks 500; all rows if the split has fewer)")
    e.add_argument("--train-subset-seed", type=int, default=42,
                   help="seed of the train subset (default 42)")
    e.add_argument("--data-source", help="directory of JSONL files (default: the run's data.source, else the hub)")
    e.add_argument("--n-samples", type=int, default=16)
    e.add_argument("--temperature", type=float, default=0.35)
    e.add_argument("--top-p", type=float, default=0.9)
    e.add_argument("--max-new-tokens", type=int, default=1024)
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--max-sequence-length", type=int, default=None,
                   help="prompt + response budget (spec §4: 2047; 4095 for DeepSeek MATH); default none")
    e.add_argument("--max-problems", type=int, default=None, help="only the first N problems (smoke tests)")
    e.add_argument("--backend", choices=["auto", "hf", "vllm"], default=None,
                   help="engine backend (default: the run's engine.backend, else auto = vLLM when installed)")
    e.add_argument("--tensor-parallel-size", type=int, default=None,
                   help="vLLM: shard the evaluated model over this many GPUs of the node (one process)")
    e.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="vLLM's share of each GPU (default 0.9: an evaluation process has its GPUs to itself; "
                        "the run's training share is not inherited)")
    e.add_argument("--every", type=int, default=None,
                   help="with --run: only checkpoints of iterations divisible by N, plus the last (default: the "
                        "run's eval_every, else all); a multiple of the run's save_every")
    e.add_argument("--workers", type=int, default=None,
                   help="with --run: checkpoints evaluated side by side, one process per GPU (per "
                        "--tensor-parallel-size GPUs) pinned with CUDA_VISIBLE_DEVICES (default: one per GPU "
                        "group of the node; 1 without CUDA)")
    e.add_argument("--output-dir", help="with --checkpoint: write DIR/<split>/ instead of <checkpoint>/eval/<split>/")
    e.add_argument("--force", action="store_true", help="re-evaluate checkpoints that already have results")
    e.add_argument("--grading", choices=["official", "math_verify"], default=None,
                   help="grader: official = the paper's (default unless the run's grading.mode says otherwise), "
                        "math_verify = Hugging Face math-verify")
    e.add_argument("--unfinished", choices=["grade", "wrong"], default="grade",
                   help="samples cut by --max-new-tokens: grade their text (default, as the official evaluation) "
                        "or count them wrong (the training reward's rule)")
    e.add_argument("--include-initial", action="store_true",
                   help="with --run: also evaluate the starting model (iteration 0) into RUN/initial/eval/")
    e.set_defaults(func=_eval)


def _add_compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="table + plots comparing runs (metrics.jsonl + eval results)")
    c.add_argument("runs", nargs="+", help="run directories")
    c.add_argument("--output-dir", default="compare", help="where compare.md, compare.json and the PNGs go")
    c.add_argument("--labels", nargs="+", help="one display name per run (default: directory names)")
    c.add_argument("--iteration-grid", type=int, default=None,
                   help="judge every run on the checkpoints of iterations divisible by N, plus its last (default: "
                        "the coarsest eval_every / save_every among the runs, so no run gets more draws)")
    c.set_defaults(func=_compare)


def _add_sft_parser(sub) -> None:
    s = sub.add_parser("sft", help="supervised fine-tuning: make the starting checkpoint (spec §4 recipe)")
    s.add_argument("--model", required=True, help="base model: local directory or hub id")
    s.add_argument("--task", required=True, choices=["gsm8k", "math"])
    s.add_argument("--output-dir", required=True)
    s.add_argument("--data-source", help="the official data files (DatasetDict dir) or a directory of JSONL files "
                                         "(default: the hub)")
    s.add_argument("--question-field", help="your data: the field holding the question")
    s.add_argument("--solution-field", help="your data: the field holding the worked solution (SFT needs it)")
    s.add_argument("--answer-field", help="your data: the field holding the bare final answer")
    s.add_argument("--epochs", type=float, default=2.0)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--micro-batch-size", type=int, default=8, help="per forward pass (gradient accumulation)")
    s.add_argument("--lr", type=float, default=1e-5, help="1e-5 (RhoMath 1.1B); the paper used 5e-5 for DeepSeekMath 7B")
    s.add_argument("--warmup-ratio", type=float, default=0.03)
    s.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear",
                   help="after warmup: linear decay to 0 (the paper) or constant")
    s.add_argument("--warmup-shape", choices=["log", "linear"], default="log",
                   help="warm-up shape: log (DeepSpeed WarmupDecayLR, the paper) or linear")
    s.add_argument("--loss-reduction", choices=["per_example", "tokens"], default="per_example",
                   help="per_example: each example's token mean, then the mean over examples (the paper); "
                        "tokens: one token mean over the batch")
    s.add_argument("--drop-last", action="store_true", help="drop each epoch's last partial batch (the paper keeps it)")
    s.add_argument("--target-template", default=None,
                   help="text after the prompt with {solution} (default: the paper's for the task and model family: "
                        "'\\n{solution}\\n', DeepSeekMath on MATH '\\n{solution}')")
    s.add_argument("--chat", action="store_true",
                   help="format with the tokenizer's chat template (generation prompt + solution + end-of-turn token)")
    s.add_argument("--system", default=None, help="with --chat: a system message")
    s.add_argument("--group-by-length", action="store_true", help="batch examples of similar length (less padding)")
    s.add_argument("--max-length", type=int, default=2048, help="longer prompt + target examples are dropped")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    s.add_argument("--max-train-rows", type=int, default=None)
    s.add_argument("--validation-size", type=int, default=None,
                   help="rows held out from train (default: the paper's GSM8K 373 / MATH 500)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="weights dtype")
    s.add_argument("--autocast", choices=["none", "bfloat16", "float16"], default="none",
                   help="mixed-precision forward passes (bfloat16 on GPUs)")
    s.add_argument("--gradient-checkpointing", action="store_true")
    s.add_argument("--attn-implementation", default=None, help="e.g. flash_attention_2")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    s.set_defaults(func=_sft)


def demo_methods(args) -> tuple[list[str] | None, list[str]]:
    """(methods, overrides) of parsed `vineppo demo` arguments. `--algorithms` takes every word after
    it (`--algorithms vineppo ppo iterations=2`): the dotted overrides among them go back to the
    overrides, the rest are methods, comma- or space-separated (None: the config's `demo.algorithms`).
    A bare word among the overrides is a ConfigError naming it."""
    from vineppo.config import ConfigError
    from vineppo.demo.config import ALGORITHMS

    words = args.algorithms or []
    overrides = list(args.overrides or []) + [w for w in words if "=" in w]
    methods = [m.strip() for w in words if "=" not in w for m in w.split(",") if m.strip()]
    bare = [o for o in overrides if "=" not in o]
    if bare:
        raise ConfigError(f"{' '.join(repr(b) for b in bare)}: an override is key=value; methods go after "
                          f"--algorithms, e.g. --algorithms vineppo,ppo,grpo (methods: {', '.join(ALGORITHMS)})")
    return methods or None, overrides


def _demo(args) -> int:
    from vineppo.demo import run_demo

    algorithms, overrides = demo_methods(args)
    run_demo(args.output_dir, config_path=args.config, overrides=overrides, include_ppo=not args.no_ppo,
             progress=args.progress, seeds=args.seeds, algorithms=algorithms)
    return 0


def _add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="offline CPU demo: synthetic arithmetic, tiny model, SFT, VinePPO vs PPO")
    d.add_argument("--output-dir", default="vineppo-demo",
                   help="where data/, runs/, compare/, demo.png and summary.json go (default ./vineppo-demo)")
    d.add_argument("--no-ppo", action="store_true", help="skip the PPO baseline run")
    d.add_argument("--seeds", type=int, default=None,
                   help="RL seeds per method (default demo.seeds = 1); the SFT start is shared; the table "
                        "reports mean ± sd and VinePPO − PPO over paired seeds")
    d.add_argument("--algorithms", nargs="+", default=None, metavar="METHOD",
                   help="the methods, the table's rows, comma- or space-separated: vineppo,ppo,grpo,dr_grpo,rloo "
                        "(default demo.algorithms = vineppo,ppo)")
    d.add_argument("--config", default=None, help="demo YAML (default configs/demo.yaml)")
    d.add_argument("--progress", action="store_true", help="show progress bars (SFT)")
    d.add_argument("overrides", nargs="*",
                   help="dotted overrides, e.g. iterations=20 mc.k=5 demo.eval.n_samples=16 demo.sft.max_steps=600")
    d.set_defaults(func=_demo)


def _plan(args) -> int:
    import json
    from pathlib import Path

    from vineppo.config import load_config
    from vineppo.plan import (GIB, PlanError, Launch, device_capacity, format_plan, launch_files, make_plan,
                              model_shape, read_launch)

    try:
        if args.gpu_memory is not None and args.gpu_memory <= 0:
            raise PlanError(f"--gpu-memory must be positive, got {args.gpu_memory}")
        cfg = load_config(args.config, args.overrides)
        launch = read_launch(args.launch) if args.launch else Launch("(no launch file)", "single", 1)
        others = launch_files(Path(args.launch).parent if args.launch else None)
        capacity, note = (int(args.gpu_memory * GIB), None) if args.gpu_memory is not None else device_capacity()
        plan = make_plan(model_shape(cfg.model.name_or_path), cfg, launch, capacity, others)
        if note:
            plan.notes.append(note)
    except PlanError as e:
        print(f"vineppo plan: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_json(), indent=1) if args.json else format_plan(plan))
    return 0 if plan.fits else 3


def _add_plan_parser(sub) -> None:
    pl = sub.add_parser("plan", help="will it fit? per-GPU memory of each phase of a run, before launch "
                                     "(exit 0 fits, 3 does not)")
    pl.add_argument("--config", required=True, help="YAML config (see configs/)")
    pl.add_argument("--launch", default=None, help="accelerate launch file (default: one process, no strategy)")
    pl.add_argument("--gpu-memory", type=float, default=None, metavar="GIB",
                    help="memory of one GPU in GiB (default: what this CUDA device reports; without one an "
                         "80 GB H100's 79.1)")
    pl.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    pl.add_argument("overrides", nargs="*",
                    help="dotted overrides, e.g. model.name_or_path=DIR (a directory with only config.json works)")
    pl.set_defaults(func=_plan)


def _requested_cpu_processes() -> int | None:
    """Processes asked of `accelerate launch --cpu --num_processes N`, if that launched us alone.

    accelerate's CPU launcher starts N processes only through mpirun; without a hostfile it starts
    one process (with MASTER_ADDR set, its sign that N > 1 was asked). We then read N from the
    launcher's command line and start the N processes ourselves with torch's own launcher."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes") or "MASTER_ADDR" not in env:
        return None
    if any(k in env for k in ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")):
        return None
    try:
        import psutil
        cmd = psutil.Process().parent().cmdline()
    except Exception:  # noqa: BLE001 - no parent info: run as launched
        return None
    if not any("accelerate" in c for c in cmd[:3]):
        return None
    for i, c in enumerate(cmd):
        if c in ("--num_processes", "--num-processes") and i + 1 < len(cmd):
            return int(cmd[i + 1])
        if c.startswith(("--num_processes=", "--num-processes=")):
            return int(c.split("=", 1)[1])
    return None


def _relaunch(n: int, argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
           "--master_addr", os.environ.get("MASTER_ADDR", "127.0.0.1"),
           "--master_port", os.environ.get("MASTER_PORT", "29500"), "-m", "vineppo", *argv]
    print(f"vineppo: starting {n} CPU processes (gloo) for `accelerate launch --cpu --num_processes {n}`",
          file=sys.stderr)
    return subprocess.call(cmd)


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and dotted overrides in any order (`train ... a=1 --resume b=2`). argparse's own
    `parse_intermixed_args` refuses sub-commands, so overrides left over after the options are
    appended here; anything else left over is an error as usual."""
    args, rest = parser.parse_known_args(argv)
    if rest:
        if hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = list(args.overrides or []) + rest
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` before or after the sub-command: third-party warnings, logs and loading bars
    on the terminal too (they always go to the run's log file, see `_log_file`)."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show third-party warnings, logs and loading bars (always in the run's log.txt)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                # SUPPRESS: a sub-command's unset flag must not overwrite `vineppo -v CMD`
                sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="show third-party output on the terminal too")


def _log_file(args) -> str | None:
    """Where a command's third-party output goes (`vineppo.console`): the run's own directory."""
    cmd = getattr(args, "command", None)
    if cmd in ("train", "demo", "compare") and getattr(args, "output_dir", None):
        return os.path.join(args.output_dir, "log.txt")
    if cmd == "eval":
        if getattr(args, "run", None):
            return os.path.join(args.run, "log.txt")
        if getattr(args, "output_dir", None):
            return os.path.join(args.output_dir, "log.txt")
        return os.path.join(args.checkpoint, "eval", "log.txt")
    if cmd == "sft" and getattr(args, "output_dir", None):
        return os.path.normpath(args.output_dir) + ".log.txt"  # sft refuses a non-empty output dir
    return None


#: `vineppo demo` computes on these CPU code paths on every x86-64 machine, so its SFT start is the
#: same on AVX2 and AVX-512 CPUs: torch's own kernels and MKL's matmuls both take their AVX2 branch
#: (docs/demo.md, reproducibility; RL numbers also depend on vLLM's CPU kernels, which follow the CPU). A value already in the
#: environment wins (on an AVX-512 machine ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO: its fastest paths;
#: note that "default" selects torch's scalar kernels, not the best ones).
DEMO_NUMERICS_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def _pin_demo_numerics() -> None:
    """Set DEMO_NUMERICS_ENV before torch is imported (both are read once, at first use)."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        for k, v in DEMO_NUMERICS_ENV.items():
            os.environ.setdefault(k, v)


def main(argv: list[str] | None = None) -> int:
    """The program (`vineppo ...`, `python -m vineppo ...`: argv None) sets up the process's console
    (`vineppo.console`) and, for the demo, its CPU code paths; a library call `main([...])` leaves
    the calling process's streams, logging and environment alone."""
    owns_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    n = _requested_cpu_processes()
    if n is not None and n > 1:
        return _relaunch(n, argv)
    parser = build_parser()
    _add_verbose(parser)
    args = parse_args(parser, argv)
    if owns_process and args.command == "demo":
        _pin_demo_numerics()
    log_file = _log_file(args)
    if owns_process and (log_file is not None or args.verbose):
        from vineppo.console import setup_console

        setup_console(log_file, verbose=args.verbose)
    from vineppo.config import ConfigError
    try:
        return args.func(args)
    except ConfigError as e:
        parser.exit(2, f"vineppo: config error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
