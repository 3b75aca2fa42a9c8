"""Supervised fine-tuning to make a starting policy (spec §4 SFT recipe).

Target: the task prompt, then `"\\n{solution}\\n"` + EOS, with the loss on the response only.
Paper recipe: 2 epochs, batch 64, LR 1e-5 (Rho) / 5e-5 (DeepSeek), warmup 3 %, max length 2048.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vineppo.tasks.base import Row, Task
from vineppo.tokens import encode_prompt

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    epochs: float = 2.0
    batch_size: int = 64
    micro_batch_size: int = 8
    lr: float = 1e-5
    warmup_ratio: float = 0.03
    max_length: int = 2048
    seed: int = 0
    #: stop after this many optimizer steps (None = the epochs)
    max_steps: int | None = None
    weight_decay: float = 0.0


def sft_examples(task: Task, tokenizer, rows: Sequence[Row], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per row; rows longer than `max_length` are dropped."""
    out = []
    for row in rows:
        p = encode_prompt(tokenizer, task.prompt(row))
        r = tokenizer(task.sft_target(row), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(p) + len(r) <= max_length:
            out.append((p + list(r), len(p)))
    return out


def sft(model, tokenizer, task: Task, rows: Sequence[Row], cfg: SFTConfig, *, progress: bool = True,
        out_dir: str | Path | None = None) -> dict:
    """Fine-tune `model` in place on the rows' gold solutions; optionally save to `out_dir`."""
    from vineppo.trainer import lr_lambda

    examples = sft_examples(task, tokenizer, rows, cfg.max_length)
    if not examples:
        raise ValueError("no SFT examples fit max_length")
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = max(1, len(examples) // cfg.batch_size)
    total = cfg.max_steps or max(1, int(math.ceil(cfg.epochs * steps_per_epoch)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_ratio))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    order: list[int] = []
    losses = []
    t0 = time.perf_counter()
    for _ in tqdm(range(total), desc="sft", disable=not progress):
        if len(order) < cfg.batch_size:
            order += rng.permutation(len(examples)).tolist()
        batch, order = order[: cfg.batch_size], order[cfg.batch_size:]
        opt.zero_grad(set_to_none=True)
        n_tok = sum(len(examples[i][0]) - examples[i][1] for i in batch)
        step_loss = 0.0
        for j in range(0, len(batch), cfg.micro_batch_size):
            mb = [examples[i] for i in batch[j: j + cfg.micro_batch_size]]
            L = max(len(ids) for ids, _ in mb)
            ids = torch.full((len(mb), L), pad, dtype=torch.long)
            attn = torch.zeros((len(mb), L), dtype=torch.long)
            labels = torch.full((len(mb), L), -100, dtype=torch.long)
            for r, (seq, p) in enumerate(mb):
                ids[r, : len(seq)] = torch.tensor(seq)
                attn[r, : len(seq)] = 1
                labels[r, p: len(seq)] = torch.tensor(seq[p:])
            ids, attn, labels = ids.to(device), attn.to(device), labels.to(device)
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                     ignore_index=-100, reduction="sum") / n_tok
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(step_loss)
    model.eval()
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {"steps": total, "final_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - t0}
