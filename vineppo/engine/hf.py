"""Transformers backend: batched `generate` with KV cache and left padding. Serves CPU and tests.

Holds its own copy of the policy weights (like vLLM would), so `update_weights` is a real push.
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from vineppo.engine.base import (Completion, Engine, EngineStats, SamplingParams, cut_generation, ending_token,
                                 stop_token_ids)
from vineppo.tokens import decode_response


def _job_seed(request_seed: int, sample: int) -> int:
    """The generator seed of a request's `sample`-th completion."""
    return (int(request_seed) * 1_000_003 + int(sample)) % (2**63 - 1)


class RowSeededSampler:
    """Temperature + nucleus (top-p) sampling in which every batch row draws from a
    `torch.Generator` of its own, so a row's tokens depend on its own logits and seed only.

    transformers' sampling draws the whole batch's tokens from one global stream: a request's samples
    then change with its neighbours in the batch. Run with `do_sample=False`: this processor leaves
    only the drawn token finite and generate's greedy step takes it. The nucleus is transformers'
    `TopPLogitsWarper`'s: the most likely tokens until their mass reaches `top_p` (at least one).
    The draw is inverse-CDF sampling with one uniform per row and step. A transformers logits
    processor by duck typing (`__call__(input_ids, scores)`), so that importing this module does
    not import transformers."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = float(temperature), float(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        if self.top_p < 1.0:
            before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the more likely tokens
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
        cdf = sorted_p.cumsum(dim=-1)
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
        target = (u.to(cdf.device) * cdf[:, -1].double()).float().unsqueeze(-1)
        pick = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
        # a zero-mass token can only be hit by rounding at the top end: step back to the last kept one
        kept = (sorted_p > 0).sum(dim=-1, keepdim=True) - 1
        token = order.gather(-1, torch.minimum(pick, kept))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)


class HFEngine(Engine):
    def __init__(self, model, tokenizer, *, max_batch_size: int = 64, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, progress: bool = True):
        """`model`: a path/hub id or an already-built `PreTrainedModel` (copied: the engine owns its weights)."""
        from transformers import AutoModelForCausalLM
        import copy

        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype or torch.float32)
        else:
            model = copy.deepcopy(model)
            if dtype is not None:
                model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.progress = progress
        self.stats = EngineStats()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        #: generation ends at any of these (the tokenizer's EOS and the generation config's ids)
        self.stop_ids = stop_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_response(self.tokenizer, ids)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                 desc: str | None = None) -> list[list[Completion]]:
        t0 = time.perf_counter()
        jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        # Similar lengths together: less left padding per batch.
        jobs.sort(key=lambda ij: len(prompts[ij[0]]))
        results: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        greedy = sampling.temperature == 0
        # seeds of their own per request (not with the call-wide stream of `shared_request_seed`)
        row_seeds = None if greedy or self.shared_request_seed else sampling.seeds_per_request(len(prompts))
        batches = [jobs[k:k + self.max_batch_size] for k in range(0, len(jobs), self.max_batch_size)]
        bar = tqdm(batches, desc=desc or "generate (hf)", disable=not self.progress or len(batches) < 2, leave=False)
        gen_tokens = 0
        for b, batch in enumerate(bar):
            seqs = [list(prompts[i]) for i, _ in batch]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            attn = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                input_ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
                attn[r, width - len(s):] = 1
            kwargs = dict(
                input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device),
                max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                pad_token_id=self.pad_id, eos_token_id=sorted(self.stop_ids) or None,
                return_dict_in_generate=True, output_logits=sampling.logprobs, use_cache=True,
            )
            if row_seeds is not None:
                # each row samples from a generator of its own (`RowSeededSampler`); generate's own
                # step then only takes the one token the sampler left standing
                sampler = RowSeededSampler([_job_seed(row_seeds[i], j) for i, j in batch],
                                           sampling.temperature, sampling.top_p)
                from transformers import LogitsProcessorList

                kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]),
                              temperature=None, top_p=None, top_k=None)
            elif not greedy:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
            with torch.random.fork_rng(devices=[]):
                if sampling.seed is not None:
                    # one stream per batch, or (`engine.shared_request_seed`) the call's seed for every batch
                    torch.manual_seed(sampling.seed if self.shared_request_seed else sampling.seed * 1_000_003 + b)
                out = self.model.generate(**kwargs)
            new = out.sequences[:, width:].tolist()
            if sampling.logprobs:
                logits = torch.stack(out.logits, dim=1).float()  # (B, T, V), raw model logits
                lp = torch.log_softmax(logits / max(sampling.temperature, 1e-6), dim=-1)
            for r, (i, j) in enumerate(batch):
                toks, text, ended = cut_generation(new[r], self.stop_ids, self._decode, sampling.stop)
                finish = "stop" if ended else "length"
                logp = None
                if sampling.logprobs:
                    logp = lp[r, torch.arange(len(toks)), torch.tensor(toks, dtype=torch.long)].tolist() if toks else []
                gen_tokens += len(toks)
                results[i][j] = Completion(token_ids=toks, text=text, finish_reason=finish, logprobs=logp,
                                           stop_token_id=ending_token(new[r], toks, self.stop_ids))
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.prompt_tokens += sum(len(p) for p in prompts) * sampling.n
        self.stats.generated_tokens += gen_tokens
        self.stats.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        own = self.model.state_dict()
        if not isinstance(state_dict, Mapping):  # a stream: copied as each tensor arrives
            seen = set()
            for k, v in state_dict:
                if k not in own:
                    raise KeyError(f"update_weights: {k} is not a weight of the engine model")
                if own[k].shape != v.shape:
                    raise ValueError(f"update_weights: {k} has shape {tuple(v.shape)}, engine expects {tuple(own[k].shape)}")
                own[k].copy_(v.detach().to(own[k].device, own[k].dtype))
                seen.add(k)
            missing = [k for k in own if k not in seen]
            if missing:
                raise KeyError(f"update_weights: the pushed weights lack {missing[:5]} ({len(missing)} in all)")
            return
        missing = [k for k in own if k not in state_dict]
        unknown = [k for k in state_dict if k not in own]
        if missing or unknown:
            raise KeyError(f"update_weights: names do not match the engine model "
                           f"(missing {missing[:5]}, unknown {unknown[:5]})")
        for k, v in state_dict.items():
            if own[k].shape != v.shape:
                raise ValueError(f"update_weights: {k} has shape {tuple(v.shape)}, engine expects {tuple(own[k].shape)}")
        for k, v in state_dict.items():
            own[k].copy_(v.detach().to(own[k].device, own[k].dtype))
