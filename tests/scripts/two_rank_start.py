"""Launched by tests/test_distributed_start.py under launch/cpu/fsdp.yaml (2 gloo processes), with
FSDP2 and accelerate's bf16 mixed precision (the GPU configuration, on CPU):

1. `check_shared_run_dir` on one directory both ranks see: passes, the token file is gone after;
2. on a directory per rank (two nodes with node-local disks): raises on both ranks;
3. a Trainer on a bf16 checkpoint: loaded in bf16, prepared by FSDP2 into fp32 masters equal to
   the checkpoint; `writer_state_dict` returns the gathered weights on rank 0 only;
   `save_pretrained` writes bf16 weights.

Each rank writes what it saw to OUT/rank<R>.json.

    accelerate launch --config_file launch/cpu/fsdp.yaml tests/scripts/two_rank_start.py MODEL_DIR OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(model_dir: str, out: str) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from vineppo.config import load_config
    from vineppo.distributed import build_accelerator
    from vineppo.shared_dir import TOKEN_FILE, RunDirNotShared, check_shared_run_dir
    from vineppo.trainer import Trainer

    torch.set_num_threads(1)
    out = Path(out)
    cfg = load_config(None, [f"model.name_or_path={model_dir}", "model.dtype=bfloat16",
                             "model.gradient_checkpointing=false", "iterations=1", "ppo.minibatch_size=8",
                             "ppo.micro_batch_size=4", "episodes.questions_per_iteration=2",
                             "episodes.samples_per_question=4"])
    acc = build_accelerator(cfg, mixed_precision="bf16")
    rank = acc.process_index
    seen: dict = {"rank": rank, "mixed_precision": str(acc.mixed_precision)}

    shared = out / "shared_run"
    if acc.is_main_process:
        shared.mkdir(parents=True)
    acc.wait_for_everyone()
    check_shared_run_dir(acc, shared)
    seen["shared_ok"] = True
    acc.wait_for_everyone()
    seen["token_left"] = (shared / TOKEN_FILE).exists()  # rank 0 removes it once every rank has read it

    own = out / f"node_local_{rank}"  # each rank's "node" has its own disk
    own.mkdir(parents=True)
    try:
        check_shared_run_dir(acc, own, wait_s=1.0)
        seen["not_shared_error"] = None
    except RunDirNotShared as e:
        seen["not_shared_error"] = str(e)

    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = Trainer(cfg, acc, tok, progress=False)
    stored = load_file(str(Path(model_dir) / "model.safetensors"))
    params = dict(trainer.unwrapped_policy().named_parameters())
    seen["master_dtypes"] = sorted({str(p.dtype) for p in params.values()})
    seen["sharded"] = all(hasattr(p, "full_tensor") for p in params.values())
    # fp32 masters made by prepare from the bf16 load equal the checkpoint exactly (all ranks gather)
    seen["masters_equal_checkpoint"] = all(
        torch.equal(params[k].full_tensor(), stored[k].float()) for k in sorted(stored) if k in params)
    sd = trainer.dist.writer_state_dict(trainer.actor, torch.bfloat16)
    seen["writer_dict"] = None if sd is None else {
        "keys": len(sd), "dtypes": sorted({str(v.dtype) for v in sd.values()}),
        "equal_checkpoint": all(torch.equal(sd[k], stored[k]) for k in stored)}
    trainer.save_pretrained(out / "ck")
    acc.wait_for_everyone()
    if acc.is_main_process:
        saved = load_file(str(out / "ck" / "model.safetensors"))
        seen["saved_dtypes"] = sorted({str(v.dtype) for v in saved.values()})
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:])
