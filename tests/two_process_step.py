"""Worker of tests/test_reference_update.py::test_two_processes_equal_one: under `accelerate launch`
(2 CPU processes), one `Trainer.step` per algorithm on this rank's half of the reference batch
(questions 0–1 on rank 0, 2–3 on rank 1: the loop's contiguous shard), then rank 0 writes the
updated policy weights and the step's metrics to OUT/<algorithm>.pt.

    accelerate launch --config_file launch/cpu/ddp.yaml tests/two_process_step.py MODEL_DIR OUT ALGO...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from update_reference import credit, make_episodes, perturb_reference, reference_config  # noqa: E402


def main(model_dir: str, out: str, *algorithms: str) -> None:
    from transformers import AutoTokenizer

    from vineppo.distributed import build_accelerator
    from vineppo.episodes import shard
    from vineppo.trainer import Trainer

    torch.set_num_threads(1)
    for algorithm in algorithms:
        cfg = reference_config(model_dir, algorithm)
        acc = build_accelerator(cfg)
        tok = AutoTokenizer.from_pretrained(model_dir)
        trainer = Trainer(cfg, acc, tok, progress=False)
        if trainer.reference is not None:
            perturb_reference(trainer)
        episodes = shard(make_episodes(tok), acc.process_index, acc.num_processes)
        credit(algorithm, episodes, tok)
        stats = trainer.step(episodes, iteration=0)
        state = {k: v.detach().clone() for k, v in trainer.unwrapped_policy().state_dict().items()}
        if acc.is_main_process:
            torch.save({"state": state, "stats": {k: v for k, v in stats.items() if k != "train/whiten_stats"},
                        "whiten": stats["train/whiten_stats"], "world": acc.num_processes}, Path(out) / f"{algorithm}.pt")
        acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
