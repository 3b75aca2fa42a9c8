"""Supervised fine-tuning to make a starting policy (spec §4 SFT recipe).

The paper's recipe (official `configs/sft_*.jsonnet` + `trainers/mle_trainer.py`), the defaults:
- example = the task prompt (BOS first), then the target + EOS, loss on the target + EOS only;
  target `"\\n{solution}\\n"`, except DeepSeekMath on MATH: `"\\n{solution}"` (`paper_target_template`);
- loss = each example's token mean, then the mean over the batch's examples
  (`loss_reduction: per_example`, the official `per_instance_non_pad_tokens_then_batch`);
- 2 epochs, batch 64, LR 1e-5 (Rho) / 5e-5 (DeepSeek), warm-up 3 % in DeepSpeed `WarmupDecayLR`'s
  log shape then linear decay to 0 (`vineppo.trainer.lr_lambda`, as RL training), the last partial
  batch of an epoch kept, examples longer than 2048 tokens dropped.
Chat prompts (`prompt`, a `PromptConfig` with `chat: true`): the chat template's generation prompt,
then the gold solution and the template's end-of-turn token (`vineppo.prompting.PromptBuilder`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vineppo.config import PromptConfig
from vineppo.prompting import PromptBuilder, end_of_turn_id
from vineppo.tasks.base import Row, Task
from vineppo.tokens import encode_prompt

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    #: passes over the training rows (fractions allowed)
    epochs: float = 2.0
    #: examples per optimizer step
    batch_size: int = 64
    #: examples per forward pass (gradient accumulation fills the batch)
    micro_batch_size: int = 8
    #: peak learning rate (AdamW; the paper: 1e-5 RhoMath, 5e-5 DeepSeekMath)
    lr: float = 1e-5
    #: share of the optimizer steps spent warming up
    warmup_ratio: float = 0.03
    #: examples with a longer prompt + target (tokens) are dropped
    max_length: int = 2048
    #: shuffling and initialisation seed
    seed: int = 0
    #: stop after this many optimizer steps (None = the epochs)
    max_steps: int | None = None
    #: AdamW weight decay
    weight_decay: float = 0.0
    #: run forward passes under torch.autocast in this dtype ("bfloat16" on GPUs); weights and
    #: optimizer stay in the model's dtype (fp32 master weights). None = no autocast.
    autocast_dtype: str | None = None
    #: "linear" (warmup, then decay to 0: the paper) or "constant" after warmup
    lr_schedule: str = "linear"
    #: draw batches from length-sorted pools of 16 batches (less padding; batches stay random
    #: in order and membership up to length), like transformers' `group_by_length`
    group_by_length: bool = False
    #: "per_example": each example's token mean, then the mean over the batch's examples (the paper);
    #: "tokens": one token mean over the whole batch (long solutions weigh more)
    loss_reduction: Literal["per_example", "tokens"] = "per_example"
    #: warm-up shape, as `optim.warmup_shape`: "log" (DeepSpeed WarmupDecayLR, the paper) or "linear"
    warmup_shape: Literal["log", "linear"] = "log"
    #: drop an epoch's last partial batch (False: keep it, the paper)
    drop_last: bool = False
    #: the text after the prompt, with `{solution}` for the gold solution; None = the task's
    #: `Task.sft_target` (`vineppo sft` resolves None to `paper_target_template`)
    target_template: str | None = None


#: SFT targets of the official configs: `sft_rho1b_for_{MATH,gsm8k}`, `sft_deepseekmath_for_gsm8k`
PAPER_TARGET = "\n{solution}\n"
#: `sft_deepseekmath_for_MATH.jsonnet`: no newline after the solution
DEEPSEEKMATH_MATH_TARGET = "\n{solution}"


def paper_target_template(task_name: str, model_family: str) -> str:
    """The official SFT target of a task and model family (`model_family` is a model id or path:
    DeepSeekMath is recognised by "deepseek" in it)."""
    if task_name == "math" and "deepseek" in model_family.lower():
        return DEEPSEEKMATH_MATH_TARGET
    return PAPER_TARGET


def sft_target(task: Task, row: Row, template: str | None = None) -> str:
    """The text after the prompt: `template` with the row's gold solution, or `task.sft_target(row)`."""
    if template is None:
        return task.sft_target(row)
    if "{solution}" not in template:
        raise ValueError(f"SFT target template {template!r} has no {{solution}} placeholder")
    return template.replace("{solution}", task.gold_solution(row))


def sft_examples(task: Task, tokenizer, rows: Sequence[Row], max_length: int, *, template: str | None = None,
                 prompt: PromptConfig | None = None) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per row; rows longer than `max_length` are dropped.

    Paper prompts: `encode_prompt(task.prompt(row))` + the target (`sft_target` with `template`) +
    EOS. Chat prompts (`prompt.chat`): the chat template's ids up to its generation prompt + the
    assistant message (`PromptBuilder.chat_target`) + the template's end-of-turn token."""
    builder = PromptBuilder(tokenizer, task, prompt) if prompt is not None and prompt.chat else None
    end = end_of_turn_id(tokenizer) if builder is not None else tokenizer.eos_token_id
    out = []
    for row in rows:
        if builder is not None:
            p, target = builder.ids(row), builder.chat_target(row)
        else:
            p, target = encode_prompt(tokenizer, task.prompt(row)), sft_target(task, row, template)
        r = tokenizer(target, add_special_tokens=False)["input_ids"] + [end]
        if len(p) + len(r) <= max_length:
            out.append((p + list(r), len(p)))
    return out


def steps_per_epoch(num_examples: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps in one epoch: every batch, the last partial one too unless `drop_last`."""
    full, rest = divmod(num_examples, batch_size)
    return max(1, full + (1 if rest and not drop_last else 0))


def _epoch_batches(rng: np.random.Generator, lengths: Sequence[int], batch_size: int,
                   group_by_length: bool, pool_batches: int = 16, drop_last: bool = True) -> list[list[int]]:
    """One epoch of batches of example indices; with `drop_last` the last partial batch is dropped
    unless it is the only one. With `group_by_length`, each pool of `pool_batches` shuffled batches
    is sorted by length before being cut, and the batches are shuffled again, so a batch pads to
    similar lengths. (transformers' LengthGroupedSampler does the same for its Trainer; this loop
    has no Trainer.)"""
    perm = rng.permutation(len(lengths)).tolist()
    if group_by_length:
        pool = batch_size * pool_batches
        perm = [i for s in range(0, len(perm), pool)
                for i in sorted(perm[s: s + pool], key=lambda i: lengths[i])]
    batches = [perm[s: s + batch_size] for s in range(0, len(perm), batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def sft_loss_share(logits: torch.Tensor, labels: torch.Tensor, reduction: str, batch_examples: int,
                   batch_tokens: int) -> torch.Tensor:
    """A micro-batch's share of its batch's SFT loss (the shares of a batch sum to the batch loss).

    logits (B, T, V) predict labels (B, T), -100 = no loss. "per_example": Σ_i mean_t CE(i, t) /
    batch_examples, i.e. each example's token mean, then the mean over the batch's examples (the
    official `per_instance_non_pad_tokens_then_batch`); "tokens": Σ_{i,t} CE(i, t) / batch_tokens."""
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="none").view(labels.shape)
    if reduction == "tokens":
        return ce.sum() / batch_tokens
    if reduction != "per_example":
        raise ValueError(f"SFTConfig.loss_reduction must be 'per_example' or 'tokens', got {reduction!r}")
    counts = (labels != -100).sum(dim=-1).clamp(min=1)
    return (ce.sum(dim=-1) / counts).sum() / batch_examples


def _autocast(device: torch.device, dtype: str | None):
    """torch.autocast for `dtype` ("bfloat16", "float16") on `device`, or a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"SFTConfig.autocast_dtype must be bfloat16, float16 or None, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def sft(model, tokenizer, task: Task, rows: Sequence[Row], cfg: SFTConfig, *, progress: bool = True,
        out_dir: str | Path | None = None, should_stop: Callable[[int, float], bool] | None = None,
        prompt: PromptConfig | None = None) -> dict:
    """Fine-tune `model` in place on the rows' gold solutions; optionally save to `out_dir`.
    `prompt`: chat prompts when `prompt.chat` (see `sft_examples`); default the paper's template.

    `should_stop(step, loss)`, if given, is called after every optimizer step (1-based step count,
    that step's loss) with the model in train mode; returning True ends SFT there (the LR schedule
    is still laid out over `max_steps` / the epochs)."""
    from vineppo.trainer import lr_lambda

    examples = sft_examples(task, tokenizer, rows, cfg.max_length, template=cfg.target_template, prompt=prompt)
    if not examples:
        raise ValueError("no SFT examples fit max_length")
    rng = np.random.default_rng(cfg.seed)
    per_epoch = steps_per_epoch(len(examples), cfg.batch_size, cfg.drop_last)
    total = cfg.max_steps or max(1, int(math.ceil(cfg.epochs * per_epoch)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_ratio, cfg.lr_schedule,
                                                             cfg.warmup_shape))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    batches: list[list[int]] = []
    losses = []
    trained = 0  # examples through the optimizer steps (the last partial batch of an epoch included)
    t0 = time.perf_counter()
    for _ in tqdm(range(total), desc="sft", disable=not progress):
        if not batches:
            batches = _epoch_batches(rng, [len(ids) for ids, _ in examples], cfg.batch_size, cfg.group_by_length,
                                     drop_last=cfg.drop_last)
        batch = batches.pop(0)
        trained += len(batch)
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
            loss = sft_loss_share(logits, labels[:, 1:], cfg.loss_reduction, len(batch), n_tok)
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
    return {"steps": len(losses), "planned_steps": total, "trained_examples": trained, "final_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - t0}


def sft_from_pretrained(model_name_or_path: str, task_name: str, output_dir: str | Path, cfg: SFTConfig, *,
                        data_source: str | None = None, validation_size: int | None = None,
                        validation_seed: int = 42, max_train_rows: int | None = None,
                        dtype: str = "float32", gradient_checkpointing: bool = False,
                        attn_implementation: str | None = None, device: str | None = None,
                        overwrite: bool = False, progress: bool = True, question_field: str | None = None,
                        answer_field: str | None = None, solution_field: str | None = None,
                        prompt: PromptConfig | None = None) -> dict:
    """`vineppo sft`: fine-tune a base model on a task's train rows and save it to `output_dir`.

    The train rows are the same as RL training's (`vineppo.data.load_rows(..., "train")`, i.e.
    with the validation set carved out by `validation_size` / `validation_seed`), so validation
    stays held out. The model and tokenizer are assembled in `<output_dir>.tmp` and renamed into
    place when done, with `sft_info.json` (recipe and statistics) beside them.
    dtype: the weights' dtype (keep float32 and set `cfg.autocast_dtype="bfloat16"` on GPUs).
    question_field / answer_field / solution_field: your own data's fields (vineppo.tasks.custom);
        SFT trains on worked solutions, so with your own fields `solution_field` is required.
    cfg.target_template None: the paper's target of this task and model family
        (`paper_target_template`). prompt: `chat: true` formats with the tokenizer's chat template
        (whose end-of-turn token becomes the saved tokenizer's EOS, as in RL training).
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
    chat = prompt is not None and prompt.chat
    if chat:
        from vineppo.prompting import use_end_of_turn_as_eos

        use_end_of_turn_as_eos(tokenizer)
    elif cfg.target_template is None:
        cfg = dataclasses.replace(cfg, target_template=paper_target_template(task_name, model_name_or_path))
        log.info("sft: target template %r (the paper's for %s and %s)", cfg.target_template, task_name,
                 model_name_or_path)
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    kept = len(sft_examples(task, tokenizer, rows, cfg.max_length, template=cfg.target_template, prompt=prompt))
    log.info("sft: %d %s train rows, %d fit max_length %d", len(rows), task_name, kept, cfg.max_length)
    stats = sft(model, tokenizer, task, rows, cfg, progress=progress, prompt=prompt)
    model.config.use_cache = True
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {"base_model": model_name_or_path, "task": task_name, "data_source": data_source or "hub",
            "train_rows": len(rows), "examples": kept, "config": dataclasses.asdict(cfg),
            "prompt": dataclasses.asdict(prompt) if chat else "paper", **stats}
    (tmp / "sft_info.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return info
