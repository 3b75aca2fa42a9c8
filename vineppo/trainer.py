"""The PPO trainer shared by VinePPO and the PPO baseline (spec §1.4–§1.6).

The only module that touches accelerate and optimizers. Per iteration (`Trainer.step`):
reference / old log-probs (and critic values for PPO) → advantages (GAE for PPO; VinePPO's come
with the episodes) → `epochs` passes over shuffled minibatches of `minibatch_size` episodes
(global, whatever the number of processes: drawn from every process's episodes by one shared
permutation, `minibatch_schedule`; gradient accumulation fills it) → per minibatch:
whitening, PPO-clip + k3 KL (+ clipped value loss), grad clip, AdamW step, LR schedule step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from vineppo.advantages import gae_advantages, masked_whiten
from vineppo.config import TrainConfig, critic_lr_for, loss_aggregation_for, validate_world, whiten_advantages_for
from vineppo.distributed import make_strategy
from vineppo.episodes import Episode
from vineppo.losses import actor_loss, kl_penalty_loss, logprobs_from_logits, ppo_policy_loss, value_loss
from vineppo.critic import CriticModel

#: a LoRA run's checkpoints also hold the adapter alone, in PEFT's format, under this name
ADAPTER_DIR = "adapter"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_attn_implementation(name: str | None) -> str | None:
    """`flash_attention_2` needs the flash-attn package: without it, fall back to `sdpa` (warned)."""
    if name == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            import logging

            logging.getLogger(__name__).warning(
                "attn_implementation flash_attention_2 needs the flash-attn package and a GPU; using sdpa")
            return "sdpa"
    return name


def disable_dropout(model: nn.Module) -> None:
    """Dropout is off in the actor (spec §1.4, `disable_dropout: true`)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str = "linear", warmup_shape: str = "linear"):
    """LR factor of optimizer step `step` (0-based): warm-up over ceil(warmup_ratio × total) steps,
    then linear decay to 0 at `total` (spec §1.6) or, with `schedule="constant"`, the full LR after
    warm-up (short CPU runs, where a decay to 0 over a few dozen steps idles half of them).

    Warm-up shapes: `"log"` is DeepSpeed `WarmupDecayLR`'s default, which the paper's runs used:
    `log(step + 1) / log(warmup)` (0 at the first step, ~45 % of the peak after 16 of 480 steps; like
    DeepSpeed, a log warm-up lasts at least 2 steps); `"linear"` is `(step + 1) / warmup`.
    """
    if schedule not in ("linear", "constant"):
        raise ValueError(f"lr schedule must be 'linear' or 'constant', got {schedule!r}")
    if warmup_shape not in ("log", "linear"):
        raise ValueError(f"warmup shape must be 'log' or 'linear', got {warmup_shape!r}")
    warmup = math.ceil(warmup_ratio * total_steps)
    if warmup_shape == "log" and warmup > 0:
        warmup = max(2, warmup)  # log(1) = 0: DeepSpeed clamps its warm-up to >= 2 steps the same way

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            if warmup_shape == "log":
                return math.log(step + 1) / math.log(warmup)
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return f


def critic_fit_metrics(values: Sequence[Sequence[float]], returns: Sequence[Sequence[float]]) -> dict:
    """How well the critic's values (before this iteration's update) predict the returns it is
    trained on, over every action token: explained variance `1 − Var(G − V) / Var(G)` (1 perfect,
    0 no better than a constant, < 0 worse) and the mean absolute value error |V − G|."""
    v = np.array([x for seq in values for x in seq], dtype=np.float64)
    g = np.array([x for seq in returns for x in seq], dtype=np.float64)
    if v.size == 0:
        return {}
    out = {"critic/value_mae": float(np.abs(v - g).mean())}
    if g.var() > 0:  # undefined when every return is equal
        out["critic/explained_variance"] = float(1.0 - (g - v).var() / g.var())
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor        # (B, L)
    attention_mask: torch.Tensor   # (B, L)
    action_mask: torch.Tensor      # (B, L-1): position t predicts input_ids[:, t+1], an action
    labels: torch.Tensor           # (B, L-1) = input_ids[:, 1:]


def collate(episodes: Sequence[Episode], eos_id: int | None, pad_id: int, device) -> Batch:
    seqs, masks = [], []
    for e in episodes:
        actions = e.action_ids(eos_id)
        seqs.append(e.prompt_ids + actions)
        masks.append((len(e.prompt_ids), len(actions)))
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    amask = torch.zeros((len(seqs), L - 1), dtype=torch.float32)
    for i, (s, (p, a)) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
        amask[i, p - 1: p - 1 + a] = 1.0
    ids, attn, amask = ids.to(device), attn.to(device), amask.to(device)
    return Batch(ids, attn, amask, ids[:, 1:])


def scatter_actions(values: Sequence[Sequence[float]], batch: Batch) -> torch.Tensor:
    """Place per-action lists (e.g. advantages) at the batch's action positions."""
    out = torch.zeros_like(batch.action_mask)
    for i, v in enumerate(values):
        pos = batch.action_mask[i].nonzero().squeeze(-1)
        if len(v) != len(pos):
            raise ValueError(f"episode {i}: {len(v)} values for {len(pos)} action tokens")
        if len(pos):
            out[i, pos] = torch.tensor(list(v), dtype=out.dtype, device=out.device)
    return out


def gather_actions(t: torch.Tensor, batch: Batch) -> list[list[float]]:
    return [t[i][batch.action_mask[i] > 0].tolist() for i in range(t.shape[0])]


def checkpoint_dtype(name_or_path: str) -> torch.dtype | None:
    """The dtype a checkpoint's weights are stored in, as its config.json says (None if unknown)."""
    from transformers import AutoConfig

    try:
        dtype = getattr(AutoConfig.from_pretrained(name_or_path), "dtype", None)
    except (OSError, ValueError):
        return None
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype)
    return dtype if isinstance(dtype, torch.dtype) else None


def reference_dtype(model_dtype: str, device_type: str) -> torch.dtype:
    """The frozen reference's dtype: half precision on accelerators (never an fp32 copy on a
    GPU), fp32 on CPU."""
    if device_type == "cpu":
        return torch.float32
    return torch.float16 if model_dtype == "float16" else torch.bfloat16


def load_reference(mcfg, device, attn_implementation: str | None = None) -> nn.Module:
    """The frozen reference policy, loaded from `model.name_or_path` again, straight in its own
    dtype, rather than a deep copy of the (fp32) policy: no second fp32 model in host RAM at start-up
    (≈ 28 GB per rank at 7B). `model.reference_offload`: it waits in CPU RAM while the engine generates."""
    from transformers import AutoModelForCausalLM

    kw = {"dtype": reference_dtype(mcfg.dtype, torch.device(device).type)}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    ref = AutoModelForCausalLM.from_pretrained(mcfg.name_or_path, **kw)
    disable_dropout(ref)
    home = "cpu" if mcfg.reference_offload else device
    return ref.to(home).eval().requires_grad_(False)


def minibatch_schedule(n_episodes: int, minibatch_size: int, epochs: int, seed: int, rank: int = 0,
                       world: int = 1) -> list[tuple[int, list[int]]]:
    """(epoch, this process's episode indices) of every optimizer step of one iteration.

    As the official sampler (spec §1.6): a generator re-seeded with `seed` every iteration draws
    one permutation of *all* the iteration's episodes per epoch (the same on every process);
    each global minibatch is `minibatch_size` consecutive entries of it (the last partial one
    dropped) and process `rank` trains on its `1/world` slice. Indices refer to the episodes
    of every process concatenated in rank order (`Trainer._gather_iteration`).
    """
    gen = torch.Generator().manual_seed(seed % (2**63))
    per_rank = minibatch_size // world
    out = []
    for epoch in range(epochs):
        perm = torch.randperm(n_episodes, generator=gen).tolist()
        for m in range(n_episodes // minibatch_size):
            glob = perm[m * minibatch_size: (m + 1) * minibatch_size]
            out.append((epoch, glob[rank * per_rank: (rank + 1) * per_rank]))
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, accelerator, tokenizer, *, progress: bool = True):
        from transformers import AutoModel, AutoModelForCausalLM

        self.cfg = cfg
        self.acc = accelerator
        self.tokenizer = tokenizer
        self.progress = progress and accelerator.is_local_main_process
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_id or 0)
        world = accelerator.num_processes
        validate_world(cfg, world)
        self.local_minibatch = cfg.ppo.minibatch_size // world
        self.accum = self.local_minibatch // cfg.ppo.micro_batch_size
        # DDP / FSDP / DeepSpeed: everything strategy-specific lives in vineppo/distributed.py
        self.dist = make_strategy(accelerator, cfg)
        self.dist.configure_batches(cfg.ppo.micro_batch_size, self.accum)

        mcfg = cfg.model
        # fp32 master weights under DDP / FSDP (bf16 runs under accelerate autocast); bf16 where
        # the strategy casts anyway: DeepSpeed's bf16 module (fp32 masters of its own), FSDP2's
        # prepare (fp32 masters from a bf16 checkpoint, see `AccelerateStrategy.load_dtype`)
        kw = {"dtype": self.dist.load_dtype(checkpoint_dtype(mcfg.name_or_path))}
        attn = resolve_attn_implementation(mcfg.attn_implementation)
        if attn:
            kw["attn_implementation"] = attn
        actor = AutoModelForCausalLM.from_pretrained(mcfg.name_or_path, **kw)
        disable_dropout(actor)
        self.ref_is_adapter_off = False
        if mcfg.lora is not None:
            from peft import LoraConfig as PeftLoraConfig, get_peft_model
            actor = get_peft_model(actor, PeftLoraConfig(
                r=mcfg.lora.r, lora_alpha=mcfg.lora.alpha, lora_dropout=mcfg.lora.dropout,
                target_modules=list(mcfg.lora.target_modules), task_type="CAUSAL_LM"))
            self.reference = None
            self.ref_is_adapter_off = True  # reference = the base weights with adapters disabled
        else:
            self.reference = load_reference(mcfg, accelerator.device, kw.get("attn_implementation"))
        if mcfg.gradient_checkpointing:
            actor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            actor.config.use_cache = False
        ocfg = cfg.optim
        opt = torch.optim.AdamW([p for p in actor.parameters() if p.requires_grad], lr=ocfg.lr,
                                betas=tuple(ocfg.betas), eps=ocfg.eps, weight_decay=ocfg.weight_decay)
        total = cfg.total_optimizer_steps
        # The scheduler is stepped by hand once per optimizer step (accelerate's prepared scheduler
        # would step num_processes times per step).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, ocfg.warmup_ratio, ocfg.schedule, ocfg.warmup_shape))
        self.critic = None
        if cfg.algorithm == "ppo":
            backbone = AutoModel.from_pretrained(mcfg.name_or_path, **kw)
            disable_dropout(backbone)
            critic = CriticModel(backbone, seed=cfg.seed % (2**31))
            if mcfg.gradient_checkpointing:
                critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            copt = torch.optim.AdamW(critic.parameters(), lr=critic_lr_for(cfg), betas=tuple(ocfg.betas), eps=ocfg.eps,
                                     weight_decay=ocfg.weight_decay)
            self.critic_scheduler = torch.optim.lr_scheduler.LambdaLR(copt, lr_lambda(total, ocfg.warmup_ratio, ocfg.schedule, ocfg.warmup_shape))
            self.actor, self.opt, self.critic, self.critic_opt = self.dist.prepare(
                actor, opt, self.scheduler, critic, copt, self.critic_scheduler)
        else:
            self.actor, self.opt, _, _ = self.dist.prepare(actor, opt, self.scheduler)
        self.optimizer_steps = 0

    # ---- weights -------------------------------------------------------------------------
    def unwrapped_policy(self):
        return self.dist.unwrap(self.actor)

    def engine_source_model(self):
        """The policy module an in-process transformers engine may copy at start-up, or None when
        its parameters are sharded or carry LoRA (the engine then loads `model.name_or_path`)."""
        if self.dist.plain_modules and self.cfg.model.lora is None:
            return self.unwrapped_policy()
        return None

    def policy_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """HF-named full weights of the current policy on every rank (LoRA merged); gathered and
        merged tensors in `dtype` (the engine's for a push: bf16 halves the host copy of an fp32
        FSDP / ZeRO-3 policy). A collective under FSDP / ZeRO-3: every rank must call it."""
        return dict(self.policy_state_items(dtype))

    def policy_state_items(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """`policy_state_dict` one tensor at a time (what the engine push streams); every rank
        iterates it to the end together under FSDP / ZeRO-3."""
        return self.dist.full_state_items(self.actor, dtype)

    def save_pretrained(self, out_dir: Path) -> None:
        """HF model (LoRA merged) + tokenizer, loadable with `from_pretrained`, in the training dtype
        (`model.dtype`: a bf16 run writes bf16 weights, whatever its fp32 master copy; resuming reads
        the trainer state's own copy). Every rank calls it (the weights are gathered together);
        only the main process holds the gathered weights and writes."""
        dtype = DTYPES[self.cfg.model.dtype]
        sd = self.dist.writer_state_dict(self.actor, dtype)
        if sd is not None:
            model = self.unwrapped_policy()
            if self.cfg.model.lora is not None:
                model = model.get_base_model()
            model.save_pretrained(out_dir, safe_serialization=True, state_dict=sd)
            # transformers writes the live parameters' dtype (fp32 masters) into config.json
            config = copy.deepcopy(model.config)
            config.dtype = dtype
            config.save_pretrained(out_dir)
            self.tokenizer.save_pretrained(out_dir)
        del sd
        if self.cfg.model.lora is not None:
            self.save_adapter(Path(out_dir) / ADAPTER_DIR)

    def save_adapter(self, out_dir: Path, every_rank: bool = False) -> None:
        """The LoRA adapter alone in PEFT's format (adapter_config.json + adapter_model.safetensors,
        a few MB: what vLLM's LoRA support and `PeftModel.from_pretrained` load), gathered from
        every rank under FSDP2 / ZeRO-3. Every rank calls it; the main process writes, or with
        `every_rank` each rank writes its own copy into its own `out_dir` (the engine push: every
        rank's engine loads the adapter from a local directory, no shared filesystem needed)."""
        sd = self.dist.adapter_state(self.actor)
        if every_rank or self.acc.is_main_process:
            self.unwrapped_policy().save_pretrained(out_dir, safe_serialization=True, state_dict=sd)
        if not every_rank:
            self.acc.wait_for_everyone()

    # ---- forward passes -------------------------------------------------------------------
    def _micro_batches(self, episodes: Sequence[Episode]):
        mb = self.cfg.ppo.micro_batch_size
        for i in range(0, len(episodes), mb):
            yield episodes[i: i + mb]

    def _logprobs(self, model, batch: Batch) -> torch.Tensor:
        with self.acc.autocast():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        return logprobs_from_logits(logits[:, :-1], batch.labels, self.cfg.ppo.logprob_temperature)

    @torch.no_grad()
    def _reference_logprobs(self, batch: Batch) -> torch.Tensor:
        if self.ref_is_adapter_off:
            model = self.unwrapped_policy()
            with model.disable_adapter():
                return self._logprobs(model, batch)
        return self._logprobs(self.reference, batch)

    def _critic_values(self, batch: Batch) -> torch.Tensor:
        with self.acc.autocast():
            v = self.critic(batch.input_ids, batch.attention_mask)
        # V(s_t) read at the position that predicts action t; (B, L) values are small: fp32 for
        # the value loss (the prepared forward no longer converts outputs, see distributed.py)
        return v[:, :-1].float()

    @torch.no_grad()
    def critic_state_values(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """PPO: the critic's V(s) of token sequences s = prompt + response prefix, read at each one's
        last token — the position `_critic_values` reads for the action that follows s — in
        micro-batches of `ppo.micro_batch_size` (right-padded as in training). Every process calls
        it together (the value probe): a forward is a collective under FSDP / ZeRO-3, so each runs
        as many micro-batches as the busiest, the others on a one-token stand-in."""
        if self.critic is None:
            raise ValueError("critic_state_values needs a critic (algorithm=ppo)")
        mb = self.cfg.ppo.micro_batch_size
        seqs = [list(s) for s in sequences]
        if any(not s for s in seqs):
            raise ValueError("critic_state_values: an empty sequence has no state to value")
        batches = [seqs[i: i + mb] for i in range(0, len(seqs), mb)]
        rounds = len(batches)
        if self.acc.num_processes > 1:
            rounds = int(self.acc.gather(torch.tensor([rounds], device=self.acc.device)).max())
        out: list[float] = []
        for r in range(rounds):
            chunk = batches[r] if r < len(batches) else [[self.pad_id]]
            ids = torch.full((len(chunk), max(len(s) for s in chunk)), self.pad_id, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for i, s in enumerate(chunk):
                ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
                attn[i, : len(s)] = 1
            with self.acc.autocast():
                v = self.critic(ids.to(self.acc.device), attn.to(self.acc.device)).float()
            if r < len(batches):
                out += [float(v[i, len(s) - 1]) for i, s in enumerate(chunk)]
        return out

    # ---- one iteration ------------------------------------------------------------------------
    def step(self, episodes: Sequence[Episode], iteration: int | None = None) -> dict:
        """Train on the iteration's episodes (this process's share: log-probs and credit are computed
        where the episodes were generated, minibatches are drawn from every process's, see
        `minibatch_schedule`); returns metrics averaged over optimizer steps.
        `iteration` (0-based) decides `ppo.critic_warmup_iterations` (critic-only updates)."""
        cfg, acc = self.cfg, self.acc
        critic_only = (self.critic is not None and iteration is not None
                       and iteration < cfg.ppo.critic_warmup_iterations)
        t0 = time.perf_counter()
        dev = acc.device
        self.actor.eval()
        # 1. old / reference log-probs (and critic values), cached per episode
        old_lp, ref_lp, old_v = [], [], []
        if self.reference is not None and cfg.model.reference_offload:
            self.reference.to(dev)
        bar = tqdm(list(self._micro_batches(episodes)), desc="train: log-probs", disable=not self.progress, leave=False)
        for mb in bar:
            b = collate(mb, self.eos_id, self.pad_id, dev)
            with torch.no_grad():
                old_lp += gather_actions(self._logprobs(self.actor, b), b)
                ref_lp += gather_actions(self._reference_logprobs(b), b)
                if self.critic is not None:
                    old_v += gather_actions(self._critic_values(b), b)
        if self.reference is not None and cfg.model.reference_offload:
            self.reference.to("cpu")
        t_lp = time.perf_counter() - t0
        lp_tokens = sum(len(a) for a in old_lp)  # this process's action tokens (summed over processes)
        # 2. advantages
        if cfg.algorithm == "ppo":
            advs, rets = [], []
            for e, v in zip(episodes, old_v):
                e.meta["critic_values"] = v  # V(s_t) per action token, read by the value probe
                n = len(v)
                if n == 0:
                    # no action token: an empty response that stopped without an answer (unfinished,
                    # so no EOS is trained either); it adds nothing to any loss
                    advs.append([])
                    rets.append([])
                    e.advantages = []
                    continue
                r = torch.zeros(1, n)
                r[0, -1] = e.reward  # the score sits on the last action token
                a, g = gae_advantages(r, torch.tensor([v]), torch.ones(1, n), cfg.ppo.gamma, cfg.ppo.lam)
                advs.append(a[0].tolist())
                rets.append(g[0].tolist())
                e.advantages = advs[-1]
                e.meta["returns"] = rets[-1]  # the critic's targets G = A + V (before whitening)
            critic_stats = critic_fit_metrics(old_v, rets)
        else:
            advs = [e.advantages for e in episodes]
            rets = None
            if any(a is None for a in advs):
                raise ValueError(f"{cfg.algorithm} episodes need advantages (the loop's credit phase) before training")
        canary = self._sync_canary(episodes, old_lp)

        # 3. epochs over shuffled global minibatches (generator re-seeded every iteration, spec §1.6)
        episodes, advs, rets, old_lp, ref_lp, old_v = self._gather_iteration(episodes, advs, rets, old_lp, ref_lp, old_v)
        logs: list[dict] = []
        self.actor.train()
        if self.critic is not None:
            self.critic.train()
        trained_tokens = 0  # action tokens through forward + backward (compute accounting)
        schedule = minibatch_schedule(len(episodes), cfg.ppo.minibatch_size, cfg.ppo.epochs, cfg.seed,
                                      acc.process_index, acc.num_processes)
        bar = tqdm(total=len(schedule), desc="train: PPO steps", disable=not self.progress, leave=False)
        for epoch, idx in schedule:
            trained_tokens += sum(len(advs[i]) for i in idx)
            logs.append(self._minibatch_step(episodes, idx, advs, rets, old_lp, ref_lp, old_v, critic_only))
            logs[-1]["epoch"] = epoch
            bar.update(1)
        bar.close()
        self.actor.eval()
        keys = [k for k in (logs[0] if logs else {}) if k not in ("epoch", "whiten")]
        out = {k: float(np.mean([l[k] for l in logs if k in l])) for k in keys}
        if logs:
            out["train/first_minibatch_ratio"] = logs[0]["train/ratio"]
        out.update(canary)
        if self.critic is not None:
            out.update(critic_stats)
            out["train/critic_only"] = float(critic_only)
        out["train/optimizer_steps"] = self.optimizer_steps
        out["train/tokens"] = trained_tokens
        out["train/lr"] = self.scheduler.get_last_lr()[0]
        n_tokens = sum(len(a) for a in old_lp)
        out["logprobs/seconds"] = t_lp
        out["logprobs/tokens"] = lp_tokens
        out["train/seconds"] = time.perf_counter() - t0 - t_lp
        out["logprobs/tokens_per_s"] = n_tokens / max(t_lp, 1e-9)
        out["train/tokens_per_s"] = n_tokens * cfg.ppo.epochs / max(out["train/seconds"], 1e-9)
        out["train/whiten_stats"] = [l.get("whiten") for l in logs]
        return out

    def _gather_iteration(self, episodes, advs, rets, old_lp, ref_lp, old_v):
        """Every process's episodes with their advantages, returns, cached log-probs and values, in
        rank order, on every process, so that a minibatch can be drawn from all of them (spec §1.6:
        the official sampler permutes the whole iteration's episodes). Python objects through
        `gather_object` (token ids and float lists: a few MB per iteration at the paper's 512
        episodes), no tensors; one process returns its inputs unchanged."""
        if self.acc.num_processes == 1:
            return list(episodes), advs, rets, old_lp, ref_lp, old_v
        from accelerate.utils import gather_object

        n = len(episodes)
        local = list(zip(episodes, advs, rets if rets is not None else [None] * n, old_lp, ref_lp,
                         old_v if old_v else [None] * n))
        cols = list(zip(*gather_object(local)))  # gather_object concatenates the ranks' lists
        eps, advs, g_rets, old_lp, ref_lp, g_v = (list(c) for c in cols)
        return eps, advs, (g_rets if rets is not None else None), old_lp, ref_lp, (g_v if old_v else [])

    def _sync_canary(self, episodes: Sequence[Episode], old_lp: list[list[float]]) -> dict:
        """Gap between the engine's sampled-token log-probs and the trainer's: a large gap right
        after a weight sync means the engine is not running the trainer's weights."""
        gaps, ratios = [], []
        for e, lp in zip(episodes, old_lp):
            if e.engine_logprobs is None:
                continue
            k = min(len(e.engine_logprobs), len(e.response_ids))
            if k == 0:
                continue
            a = np.array(lp[:k])
            b = np.array(e.engine_logprobs[:k])
            gaps.append(np.abs(a - b).mean())
            ratios.append(np.exp(a - b).mean())
        if not gaps:
            return {}
        return {"sync/logprob_gap": float(np.mean(gaps)), "sync/ratio_trainer_vs_engine": float(np.mean(ratios))}

    def _minibatch_step(self, episodes, idx, advs, rets, old_lp, ref_lp, old_v, critic_only: bool = False) -> dict:
        cfg, acc = self.cfg, self.acc
        dev = acc.device
        # Whitening over the whole global minibatch (every micro-batch, every process): with the
        # official grad-accum 1 this is the official per-micro-batch whitening (spec §1.4).
        flat = torch.tensor([x for i in idx for x in advs[i]], dtype=torch.float32, device=dev)
        if whiten_advantages_for(cfg):
            w, wstats = masked_whiten(flat, torch.ones_like(flat), distributed=acc.num_processes > 1)
        else:
            w, wstats = flat, {}
        pieces, pos = [], 0
        for i in idx:
            pieces.append(w[pos: pos + len(advs[i])].tolist())
            pos += len(advs[i])
        stats: list[dict] = []
        mbs = cfg.ppo.micro_batch_size
        for j in range(0, len(idx), mbs):
            sub = idx[j: j + mbs]
            b = collate([episodes[i] for i in sub], self.eos_id, self.pad_id, dev)
            A = scatter_actions(pieces[j: j + mbs], b)
            old = scatter_actions([old_lp[i] for i in sub], b)
            ref = scatter_actions([ref_lp[i] for i in sub], b)
            models = (self.actor,) if self.critic is None else (self.actor, self.critic)
            with self.dist.accumulate(*models):
                with torch.no_grad() if critic_only else contextlib.nullcontext():
                    logp = self._logprobs(self.actor, b)
                pg, st = ppo_policy_loss(logp, old, A, b.action_mask, cfg.ppo.cliprange, cfg.ppo.ratio_threshold,
                                         aggregation=loss_aggregation_for(cfg),
                                         norm_length=cfg.sampling.max_new_tokens)
                kl_loss, kl = kl_penalty_loss(logp, ref, b.action_mask, cfg.ppo.kl_coef,
                                              cfg.ppo.kl_clamp_min, cfg.ppo.kl_clamp_max)
                loss = actor_loss(pg, kl_loss, bool(st["ratio_skipped"]))
                if not critic_only:  # ppo.critic_warmup_iterations: only the critic learns
                    self.dist.backward(self.actor, loss)
                st = {f"train/{k}": v for k, v in st.items()}
                st["train/kl"] = kl
                st["train/loss"] = float(loss.detach())
                if self.critic is not None:
                    v = self._critic_values(b)
                    G = scatter_actions([rets[i] for i in sub], b)
                    Vold = scatter_actions([old_v[i] for i in sub], b)
                    vl, vst = value_loss(v, Vold, G, b.action_mask, cfg.ppo.cliprange_value)
                    self.dist.backward(self.critic, vl)
                    st.update({f"train/{k}": x for k, x in vst.items()})
                # each model clips its own gradients and steps its own optimizer (spec §1.6)
                if not critic_only:
                    gn = self.dist.optimizer_step(self.actor, self.opt, cfg.optim.max_grad_norm)
                    if gn is not None:
                        st["train/grad_norm"] = gn
                if self.critic is not None:
                    gn = self.dist.optimizer_step(self.critic, self.critic_opt, cfg.optim.max_grad_norm)
                    if gn is not None:
                        st["train/value_grad_norm"] = gn
            stats.append(st)
        if not self.dist.sync_gradients:
            raise RuntimeError("gradient accumulation out of step with the minibatch")
        if not critic_only:
            self.scheduler.step()
            self.optimizer_steps += 1
        if self.critic is not None:
            self.critic_scheduler.step()
        out = {k: float(np.mean([s[k] for s in stats if k in s])) for k in stats[-1]}
        out["whiten"] = {**wstats, "episodes": list(idx)}
        return out

    # ---- checkpoint state ------------------------------------------------------------------
    def _schedulers(self) -> dict:
        out = {"policy": self.scheduler}
        if self.critic is not None:
            out["critic"] = self.critic_scheduler
        return out

    def save_state(self, out_dir: Path) -> None:
        """Optimizer(s), scheduler(s), RNG of every process, model(s): accelerate's format (DDP,
        FSDP) or one DeepSpeed checkpoint per engine. Every rank calls it."""
        self.dist.save_state(out_dir, self._schedulers())

    def load_state(self, in_dir: Path) -> None:
        self.dist.load_state(in_dir, self._schedulers())
        self.optimizer_steps = int(self.scheduler.last_epoch)
