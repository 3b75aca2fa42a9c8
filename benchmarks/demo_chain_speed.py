"""Where VinePPO's time goes on the long-chain demo, and what MC settings save.

Builds (or reuses from the cache, as `vineppo demo` does) the long-chain demo's SFT start, then runs
`vineppo train` for `--iterations` VinePPO iterations from it once per setting, each in its own
process, all with the same RL seed (the same questions). A setting is a name and dotted overrides of
the demo's run config, e.g. `k5:mc.k=5` or `seqs:engine.max_num_seqs=1024,engine.kv_cache_memory_bytes=536870912`.
Per setting it prints the mean seconds per iteration of each phase (generate, MC, log-probs, train),
MC tokens per iteration and MC tokens/s, the mean MC value's spread over the states (the first
setting's states are not the others' after iteration 1), and every ratio to the first setting.

    python benchmarks/demo_chain_speed.py [--iterations 3] [--sft MODEL_DIR] [--setting NAME:K=V,K=V ...]

Default settings: the paper's fixed K = 9 with vLLM's 256 sequences in flight (`k9`, the
baseline); 1024 sequences (`seqs`); K = 5 (`k5`); the adaptive budget (`adaptive`); and
configs/demo_chain.yaml as it is (`config`: adaptive, 1024 sequences). The last line is
`demo_chain_speed: MC seconds per iteration k9 B, <name> ratio R, ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the paper's fixed K = 9 with vLLM's default 256 sequences in flight, then one change at a time,
#: then configs/demo_chain.yaml as it is (adaptive MC, 1024 sequences)
PAPER = "mc.adaptive=false,mc.k=9,engine.max_num_seqs=256,engine.kv_cache_memory_bytes=268435456"
DEFAULT_SETTINGS = [
    f"k9:{PAPER}",
    f"seqs:{PAPER},engine.max_num_seqs=1024,engine.kv_cache_memory_bytes=536870912",
    f"k5:{PAPER},mc.k=5",
    f"adaptive:{PAPER},mc.adaptive=true",
    "config:",
]
PHASES = ("generate", "mc", "logprobs", "train")


def say(msg: str) -> None:
    print(f"[demo_chain_speed] {msg}", flush=True)


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name:
        raise SystemExit(f"--setting {text!r}: expected NAME:key=value,key=value")
    return name, [o for o in rest.split(",") if o]


def run_config(out: Path, sft: Path | None = None) -> Path:
    """The demo's VinePPO run config from its cached SFT start (built when missing), or from the
    model directory `sft` (an SFT start an earlier `vineppo demo` cached: the cache key holds a hash
    of the package's code, so after an edit the demo would train a new one)."""
    from vineppo.config import to_dict
    from vineppo.demo import load_demo_config
    from vineppo.demo.data import prepare_data
    from vineppo.demo.runs import _run_config

    dc = load_demo_config(ROOT / "configs" / "demo_chain.yaml")
    demo, base = dc.demo, dc.train
    d = prepare_data(demo, base, out)
    ctrl = prepare_data(demo, base, out, control=True) if demo.control.enabled else None
    if sft is not None:
        sft_dir = sft
    else:
        sft_dir = build_sft(demo, d, ctrl)
    cfg = _run_config(base, "vineppo", sft_dir, d.data_dir)
    path = out / "vineppo.config.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def build_sft(demo, d, ctrl) -> Path:
    from vineppo.demo import ensure_sft_start
    from vineppo.demo.sft_start import _TorchThreads, default_cache_dir

    t0 = time.perf_counter()
    with _TorchThreads(demo.torch_threads if demo.torch_threads != "auto" else None):
        sft_dir, info, cached = ensure_sft_start(demo, d.rl_rows + (ctrl.rl_rows if ctrl else []),
                                                 Path(demo.cache_dir or default_cache_dir()), stop_rows=d.val_rows)
    say(f"SFT start {'from the cache' if cached else f'built in {time.perf_counter() - t0:.0f}s'}: {sft_dir}")
    return sft_dir


def run_setting(config: Path, out: Path, name: str, overrides: list[str], iterations: int) -> dict:
    run_dir = out / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "vineppo", "train", "--config", str(config), "--output-dir", str(run_dir),
           f"iterations={iterations}", f"save_every={iterations}", "probe.every=0", *overrides]
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"setting {name} failed (exit {rc}); see {out / f'{name}.log'}")
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    n = len(rows)
    res = {f"{p}_s": sum(r.get(f"{p}/seconds", 0.0) for r in rows) / n for p in PHASES}
    res["iteration_s"] = sum(r["seconds"] for r in rows) / n
    res["mc_tokens"] = sum(r.get("mc/tokens", 0) for r in rows) / n
    res["mc_tokens_per_s"] = res["mc_tokens"] / res["mc_s"] if res["mc_s"] else float("nan")
    res["reward"] = sum(r.get("reward/mean", 0.0) for r in rows) / n
    res["process_s"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--setting", action="append", help="NAME:key=value,key=value (repeatable; first = baseline)")
    ap.add_argument("--sft", type=Path, help="an SFT start's model directory (default: build or reuse the demo's)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "demo_chain_speed")
    args = ap.parse_args(argv)
    settings = [parse_setting(s) for s in (args.setting or DEFAULT_SETTINGS)]
    args.out.mkdir(parents=True, exist_ok=True)
    config = run_config(args.out, args.sft)
    results = {}
    for name, overrides in settings:
        say(f"{name}: {' '.join(overrides) or '(the config as it is)'}")
        results[name] = r = run_setting(config, args.out, name, overrides, args.iterations)
        say(f"{name}: per iteration {r['iteration_s']:.1f}s = " + ", ".join(f"{p} {r[f'{p}_s']:.1f}s" for p in PHASES)
            + f"; MC {r['mc_tokens']:.0f} tokens at {r['mc_tokens_per_s']:.0f} tokens/s; train reward {r['reward']:.3f}")
    first = settings[0][0]
    base = results[first]
    say(f"ratios to {first} (per iteration): " + "; ".join(
        f"{name}: MC seconds {r['mc_s'] / base['mc_s']:.2f}, MC tokens {r['mc_tokens'] / base['mc_tokens']:.2f}, "
        f"iteration seconds {r['iteration_s'] / base['iteration_s']:.2f}"
        for name, r in results.items() if name != first))
    print(f"demo_chain_speed: MC seconds per iteration {first} {base['mc_s']:.1f}, " + ", ".join(
        f"{name} ratio {r['mc_s'] / base['mc_s']:.2f}" for name, r in results.items() if name != first), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
