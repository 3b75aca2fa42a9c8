"""Supervised fine-tuning to make a starting policy (spec §4 SFT recipe).

Target: the task prompt, then `"\\n{solution}\\n"` + EOS, with the loss on the response only.
Paper recipe: 2 epochs, batch 64, LR 1e-5 (Rho) / 5e-5 (DeepSeek), warmup 3 %, max length 2048.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

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
    #: run forward passes under torch.autocast in this dtype ("bfloat16" on GPUs); weights and
    #: optimizer stay in the model's dtype (fp32 master weights). None = no autocast.
    autocast_dtype: str | None = None
    #: "linear" (warmup, then decay to 0: the paper) or "constant" after warmup
    lr_schedule: str = "linear"
    #: draw batches from length-sorted pools of 16 batches (less padding; batches stay random
    #: in order and membership up to length), like transformers' `group_by_length`
    group_by_length: bool = False


def sft_examples(task: Task, tokenizer, rows: Sequence[Row], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per row; rows longer than `max_length` are dropped."""
    out = []
    for row in rows:
        p = encode_prompt(tokenizer, task.prompt(row))
        r = tokenizer(task.sft_target(row), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(p) + len(r) <= max_length:
            out.append((p + list(r), len(p)))
    return out


def _epoch_batches(rng: np.random.Generator, lengths: Sequence[int], batch_size: int,
                   group_by_length: bool, pool_batches: int = 16) -> list[list[int]]:
    """One epoch of batches of example indices (the last partial batch is dropped unless it is the
    only one). With `group_by_length`, each pool of `pool_batches` shuffled batches is sorted by
    length before being cut, and the batches are shuffled again, so a batch pads to similar lengths.
    (transformers' LengthGroupedSampler does the same for its Trainer; this loop has no Trainer.)"""
    perm = rng.permutation(len(lengths)).tolist()
    if group_by_length:
        pool = batch_size * pool_batches
        perm = [i for s in range(0, len(perm), pool)
                for i in sorted(perm[s: s + pool], key=lambda i: lengths[i])]
    batches = [perm[s: s + batch_size] for s in range(0, len(perm), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _autocast(device: torch.device, dtype: str | None):
    """torch.autocast for `dtype` ("bfloat16", "float16") on `device`, or a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"SFTConfig.autocast_dtype must be bfloat16, float16 or None, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def sft(model, tokenizer, task: Task, rows: Sequence[Row], cfg: SFTConfig, *, progress: bool = True,
        out_dir: str | Path | None = None, should_stop: Callable[[int, float], bool] | None = None) -> dict:
    """Fine-tune `model` in place on the rows' gold solutions; optionally save to `out_dir`.

    `should_stop(step, loss)`, if given, is called after every optimizer step (1-based step count,
    that step's loss) with the model in train mode; returning True ends SFT there (the LR schedule
    is still laid out over `max_steps` / the epochs)."""
    from vineppo.trainer import lr_lambda

    examples = sft_examples(task, tokenizer, rows, cfg.max_length)
    if not examples:
        raise ValueError("no SFT examples fit max_length")
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = max(1, len(examples) // cfg.batch_size)
    total = cfg.max_steps or max(1, int(math.ceil(cfg.epochs * steps_per_epoch)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_ratio, cfg.lr_schedule))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    batches: list[list[int]] = []
    losses = []
    t0 = time.perf_counter()
    for _ in tqdm(range(total), desc="sft", disable=not progress):
        if not batches:
            batches = _epoch_batches(rng, [len(ids) for ids, _ in examples], cfg.batch_size, cfg.group_by_length)
        batch = batches.pop(0)
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
            with _autocast(device, cfg.autocast_dtype):
                logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                     ignore_index=-100, reduction="sum") / n_tok
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(step_loss)
        if should_stop is not None and should_stop(len(losses), step_loss):
            model.train()  # in case the callback evaluated
            break
    model.eval()
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {"steps": len(losses), "planned_steps": total, "final_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - t0}


def sft_from_pretrained(model_name_or_path: str, task_name: str, output_dir: str | Path, cfg: SFTConfig, *,
                        data_source: str | None = None, validation_size: int | None = None,
                        validation_seed: int = 42, max_train_rows: int | None = None,
                        dtype: str = "float32", gradient_checkpointing: bool = False,
                        attn_implementation: str | None = None, device: str | None = None,
                        overwrite: bool = False, progress: bool = True, question_field: str | None = None,
                        answer_field: str | None = None, solution_field: str | None = None) -> dict:
    """`vineppo sft`: fine-tune a base model on a task's train rows and save it to `output_dir`.

    The train rows are the same as RL training's (`vineppo.data.load_rows(..., "train")`, i.e.
    with the validation set carved out by `validation_size` / `validation_seed`), so validation
    stays held out. The model and tokenizer are assembled in `<output_dir>.tmp` and renamed into
    place when done, with `sft_info.json` (recipe and statistics) beside them.
    dtype: the weights' dtype (keep float32 and set `cfg.autocast_dtype="bfloat16"` on GPUs).
    question_field / answer_field / solution_field: your own data's fields (vineppo.tasks.custom);
        SFT trains on worked solutions, so with your own fields `solution_field` is required.
    """
    import json
    import os
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.data import load_rows
    from vineppo.tasks import get_task

    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {out} is not empty; pass --overwrite or choose another one")
    task = get_task(task_name)
    if question_field or answer_field or solution_field:
        from vineppo.tasks.custom import CustomFieldsTask, MissingSolutionError

        if not solution_field:
            raise MissingSolutionError("SFT trains on worked solutions, but no solution field was given "
                                       f"(answers only, field {answer_field!r}); pass --solution-field FIELD")
        task = CustomFieldsTask(task, question_field or task.query_field, answer_field, solution_field)
    rows = load_rows(task_name, "train", data_source, validation_size=validation_size, seed=validation_seed,
                     task=task)
    if max_train_rows is not None:
        rows = rows[:max_train_rows]
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {model_name_or_path} has no EOS token; the SFT target ends with EOS")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    kept = len(sft_examples(task, tokenizer, rows, cfg.max_length))
    log.info("sft: %d %s train rows, %d fit max_length %d", len(rows), task_name, kept, cfg.max_length)
    stats = sft(model, tokenizer, task, rows, cfg, progress=progress)
    model.config.use_cache = True
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {"base_model": model_name_or_path, "task": task_name, "data_source": data_source or "hub",
            "train_rows": len(rows), "examples": kept, "config": dataclasses.asdict(cfg), **stats}
    (tmp / "sft_info.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return info
