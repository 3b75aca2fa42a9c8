"""Launched by tests/test_distributed.py under launch/cpu/zero3.yaml (2 gloo processes): the
package's own distributed set-up (build_accelerator, the ZeRO-3 strategy), one ZeRO-3 forward in
step, then a collective on the ZeRO-3 optimizer's own process group (`dp_process_group`: DeepSpeed's
copy of the world group, which carries ZeRO's gradient reductions, overflow checks and norms) that
rank 1 joins `--delay` seconds late.

Prints one line on rank 0: `probe: timeout after S s: MESSAGE` or `probe: no timeout after S s`."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vineppo.config import load_config
from vineppo.distributed import build_accelerator, make_strategy, name_timeout_setting


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout-minutes", type=float, required=True)
    ap.add_argument("--delay", type=float, required=True)
    a = ap.parse_args()
    cfg = load_config(None, ["model.name_or_path=unused", f"distributed.timeout_minutes={a.timeout_minutes}",
                             "ppo.minibatch_size=2", "ppo.micro_batch_size=1"])
    acc = build_accelerator(cfg)
    strategy = make_strategy(acc, cfg)
    strategy.configure_batches(1, 1)
    torch.manual_seed(0)
    # 512 x 512 > ZeRO-3's persistence threshold (1e5 elements): the weight is partitioned
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    engine, _, _, _ = strategy.prepare(model, opt, sched)
    x = torch.ones(1, 512)
    with torch.no_grad():
        in_sync = float(engine(x).sum())  # both ranks together: must work
    acc.wait_for_everyone()
    if acc.process_index == 1:
        time.sleep(a.delay)
    t0 = time.monotonic()
    try:
        import deepspeed.comm as ds_dist

        with name_timeout_setting(cfg):
            ds_dist.all_reduce(torch.ones(1), group=engine.optimizer.dp_process_group)
    except Exception as e:  # noqa: BLE001 - the probe reports whatever came back
        if acc.process_index == 0:
            print(f"probe: in-sync forward {in_sync:.4f}; {type(e).__name__} after {time.monotonic() - t0:.1f} s: {e}",
                  flush=True)
        return 1
    if acc.process_index == 0:
        print(f"probe: in-sync forward {in_sync:.4f}; no timeout after {time.monotonic() - t0:.1f} s", flush=True)
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
