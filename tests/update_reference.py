"""An independent reference for one `Trainer.step`, written from the spec (§1.3–§1.6) in plain torch,
float64, one episode at a time (no padding), with a hand-written AdamW — and on purpose without
`vineppo.losses` / `vineppo.advantages`.

Also the fixed batch the tests feed it: 4 questions × 2 samples of multi-token responses of
different lengths, some finished (EOS trained), some not, each with reasoning steps split at
newlines. `tests/test_reference_update.py` compares `Trainer.step` with `reference_step`;
`tests/two_process_step.py` runs the same batch on 2 processes.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right

import torch

from vineppo.config import load_config
from vineppo.episodes import Episode
from vineppo.tokens import encode_prompt, token_char_starts

QUESTIONS = ["What is 2 + 2?", "What is 3 * 3?", "What is 1 + 1?", "What is 7 - 2?"]
#: (response text, finished, reward, MC values V(s_0..s_{n-1}) for VinePPO; None = beyond the cap)
RESPONSES = [
    ("2 + 2 = 4\n#### 4", True, 1.0, [0.5, 0.75]),
    ("2 + 2 = 5", False, 0.0, [0.5]),
    ("3 * 3 = 9\nso 9\n#### 9", True, 1.0, [0.25, 0.5, None]),
    ("9\n#### 8", True, 0.0, [0.25, 0.5]),
    ("1 + 1 = 2\n#### 2", True, 1.0, [0.875, 1.0]),
    ("1 + 1 = 3\n#### 3", True, 0.0, [0.875, 0.125]),
    ("7 - 2\n= 5", False, 0.0, [0.375, 0.5]),
    ("7 - 2 = 5\n#### 5", True, 1.0, [0.375, 0.625]),
]
SAMPLES = 2

#: what each algorithm trains with unless told otherwise (docs/training.md, Algorithms: the papers' choices)
DEFAULTS = {  # algorithm: (loss aggregation, whitening)
    "vineppo": ("token_mean", True), "ppo": ("token_mean", True), "grpo": ("seq_mean_token_mean", False),
    "dr_grpo": ("seq_mean_token_sum_norm", False), "rloo": ("seq_mean_token_sum_norm", False),
}


def reference_config(tiny_model_dir, algorithm, extra=()):
    return load_config(None, [
        f"algorithm={algorithm}", f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "episodes.questions_per_iteration=4",
        "episodes.samples_per_question=2", "ppo.minibatch_size=4", "ppo.micro_batch_size=2", "ppo.epochs=2",
        "ppo.kl_coef=0.05", "ppo.cliprange=0.02", "optim.lr=0.01", "optim.eps=0.05", "optim.max_grad_norm=0.5",
        "optim.warmup_ratio=0", "optim.schedule=linear", "sampling.max_new_tokens=16", "iterations=1",
        "logging.progress=false", "seed=11", *extra])


def perturb_reference(trainer, scale=0.02):
    """A reference policy other than the starting policy, so that the KL term and its gradient are
    non-zero from the first optimizer step (after an SFT start they are 0 at step 1)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in trainer.reference.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def credit(algorithm, episodes, tok):
    """The package's credit phase for the batch (what the loop does before `Trainer.step`)."""
    from vineppo.loop import assign_group_advantages, assign_vine_advantages

    if algorithm == "vineppo":
        assign_vine_advantages(episodes)
    elif algorithm != "ppo":
        assign_group_advantages(episodes, 2, algorithm, tok.eos_token_id)


def newline_boundaries(text: str) -> list[int]:
    """Steps split before every newline (the newline opens the next step), GSM8K-style."""
    return [0] + [i for i, c in enumerate(text) if c == "\n"] + [len(text)]


def make_episodes(tok) -> list[Episode]:
    eps = []
    for k, (text, finished, reward, values) in enumerate(RESPONSES):
        q = k // SAMPLES
        prompt = encode_prompt(tok, f"[MATH_TASK] Problem:\n{QUESTIONS[q]}\n\nSolution:")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        eps.append(Episode(question_index=q, sample_index=k % SAMPLES, prompt_ids=prompt, response_ids=ids,
                           response_text=text, finished=finished, truncated=False, reward=reward,
                           step_boundaries=newline_boundaries(text), token_starts=token_char_starts(tok, ids, text),
                           step_values=list(values)))
    return eps


# ---- credit, by hand ------------------------------------------------------------------------------
def n_actions(e: Episode) -> int:
    return len(e.response_ids) + (1 if e.finished else 0)


def vine_token_advantages(e: Episode, tok) -> list[float]:
    """Spec §1.3: A_i = r_i + V(s_{i+1}) − V(s_i) with r = (0, …, 0, R), V(terminal) = 0, states past
    the cap back-filled with r_i + V_{i+1}; a token takes the step of its first character (found
    here by decoding prefixes), EOS copies the last token."""
    n = len(e.step_boundaries) - 1
    r = [0.0] * (n - 1) + [e.reward]
    v = list(e.step_values) + [0.0]
    for i in reversed(range(n)):
        if v[i] is None:
            v[i] = r[i] + v[i + 1]
    step_adv = [r[i] + v[i + 1] - v[i] for i in range(n)]
    out = []
    for j in range(len(e.response_ids)):
        start = len(tok.decode(e.response_ids[:j]))
        out.append(step_adv[min(bisect_right(e.step_boundaries, start) - 1, n - 1)])
    if e.finished:
        out.append(out[-1])
    return out


def group_token_advantages(eps: list[Episode], method: str) -> list[list[float]]:
    out = []
    for e in eps:
        g = [x.reward for x in eps if x.question_index == e.question_index]
        mean = sum(g) / len(g)
        if method == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in g) / (len(g) - 1))
            a = (e.reward - mean) / (std + 1e-4)
        elif method == "dr_grpo":
            a = e.reward - mean
        else:  # rloo
            a = e.reward - (sum(g) - e.reward) / (len(g) - 1)
        out.append([a] * n_actions(e))
    return out


def gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    T = len(rewards)
    adv = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        nxt = values[t + 1] if t + 1 < T else 0.0
        running = rewards[t] + gamma * nxt - values[t] + gamma * lam * running
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values)]


# ---- the model side, by hand -----------------------------------------------------------------------
def actions_and_sequence(e: Episode, eos_id: int) -> tuple[list[int], torch.Tensor]:
    actions = e.response_ids + ([eos_id] if e.finished else [])
    return actions, torch.tensor([e.prompt_ids + actions])


def action_logprobs(model, e: Episode, eos_id: int, temperature: float) -> torch.Tensor:
    """log π(a_t | s_t) for every action of `e`, from the logits at the position before each action."""
    actions, ids = actions_and_sequence(e, eos_id)
    p = len(e.prompt_ids)
    logits = model(input_ids=ids).logits[0, p - 1: p - 1 + len(actions)].double() / temperature
    return torch.log_softmax(logits, -1)[torch.arange(len(actions)), torch.tensor(actions)]


def state_values(critic, e: Episode, eos_id: int) -> torch.Tensor:
    """V(s_t) for every action t: the value head on the hidden state of the last token of s_t."""
    actions, ids = actions_and_sequence(e, eos_id)
    p = len(e.prompt_ids)
    h = critic.backbone(input_ids=ids).last_hidden_state[0, p - 1: p - 1 + len(actions)]
    return critic.value_head(h).squeeze(-1)


class AdamW:
    """torch.optim.AdamW's update, written out (weight decay 0)."""

    def __init__(self, params, lr, betas, eps):
        self.params, self.lr, (self.b1, self.b2), self.eps = list(params), lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads, lr_factor: float):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            mhat = m / (1 - self.b1 ** self.t)
            vhat = v / (1 - self.b2 ** self.t)
            with torch.no_grad():
                p -= self.lr * lr_factor * mhat / (vhat.sqrt() + self.eps)


def clip_by_total_norm(grads, max_norm: float):
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    coef = min(1.0, max_norm / (float(norm) + 1e-6))
    return [g * coef for g in grads], float(norm)


def reference_step(cfg, policy, reference, critic, episodes: list[Episode], advantages, eos_id: int) -> dict:
    """One iteration of training as the spec describes it. `policy`, `reference`, `critic` are float64
    copies (changed in place: the policy and critic end up updated). `advantages`: per episode,
    per action (VinePPO / group methods), or None for PPO (GAE from the critic here). Returns the
    advantages, returns, per-minibatch losses and the optimizer-step count."""
    ppo, T = cfg.ppo, cfg.ppo.logprob_temperature
    aggregation = ppo.loss_aggregation or DEFAULTS[cfg.algorithm][0]
    whiten = ppo.whiten_advantages if ppo.whiten_advantages is not None else DEFAULTS[cfg.algorithm][1]
    with torch.no_grad():
        old = [action_logprobs(policy, e, eos_id, T) for e in episodes]
        ref = [action_logprobs(reference, e, eos_id, T) for e in episodes]
        old_v = [state_values(critic, e, eos_id) for e in episodes] if critic is not None else None
    returns = None
    if critic is not None:
        advantages, returns = [], []
        for e, v in zip(episodes, old_v):
            r = [0.0] * n_actions(e)
            r[-1] = e.reward  # the score on the last action token
            a, g = gae(r, v.tolist(), ppo.gamma, ppo.lam)
            advantages.append(a)
            returns.append(g)
    n = len(episodes)
    total_steps = cfg.iterations * ppo.epochs * (n // ppo.minibatch_size)
    steps_per_lr = [1.0 - k / total_steps for k in range(total_steps)]  # warm-up 0, linear decay
    params = [p for p in policy.parameters() if p.requires_grad]  # LoRA: the adapters only
    opt = AdamW(params, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps)
    copt = AdamW(critic.parameters(), cfg.optim.lr, cfg.optim.betas, cfg.optim.eps) if critic is not None else None
    gen = torch.Generator().manual_seed(cfg.seed)
    losses, step = [], 0
    for _epoch in range(ppo.epochs):
        perm = torch.randperm(n, generator=gen).tolist()
        for m in range(n // ppo.minibatch_size):
            idx = perm[m * ppo.minibatch_size: (m + 1) * ppo.minibatch_size]
            flat = torch.tensor([a for i in idx for a in advantages[i]], dtype=torch.float64)
            if whiten:
                flat = (flat - flat.mean()) / torch.sqrt(flat.var(unbiased=True) + 1e-8)
            A, pos = {}, 0
            for i in idx:
                A[i] = flat[pos: pos + n_actions(episodes[i])]
                pos += n_actions(episodes[i])
            micro = [idx[j: j + ppo.micro_batch_size] for j in range(0, len(idx), ppo.micro_batch_size)]
            grads = [torch.zeros_like(p) for p in params]
            cgrads = [torch.zeros_like(p) for p in critic.parameters()] if critic is not None else None
            rec = {"loss": [], "pg_loss": [], "kl": [], "value_loss": [], "skipped": []}
            for mb in micro:
                per_tok, kl_seq, lps = [], [], []
                for i in mb:
                    lp = action_logprobs(policy, episodes[i], eos_id, T)
                    lps.append(lp)
                    ratio = torch.exp(lp - old[i])
                    clipped = torch.clamp(ratio, 1 - ppo.cliprange, 1 + ppo.cliprange)
                    per_tok.append(torch.maximum(-A[i] * ratio, -A[i] * clipped))
                    d = ref[i] - lp
                    kl_seq.append(torch.clamp(torch.exp(d) - d - 1, ppo.kl_clamp_min, ppo.kl_clamp_max).sum())
                if aggregation == "token_mean":
                    pg = torch.cat(per_tok).mean()
                elif aggregation == "seq_mean_token_mean":
                    pg = torch.stack([x.mean() for x in per_tok]).mean()
                else:
                    pg = torch.stack([x.sum() / cfg.sampling.max_new_tokens for x in per_tok]).mean()
                kl = torch.stack(kl_seq).mean()
                loss = pg + ppo.kl_coef * kl
                mean_ratio = float(torch.cat([torch.exp(lp.detach() - old[i]) for lp, i in zip(lps, mb)]).mean())
                if mean_ratio > ppo.ratio_threshold:  # the whole actor loss of the micro-batch is skipped
                    loss, pg = loss * 0.0, pg * 0.0
                rec["skipped"].append(float(mean_ratio > ppo.ratio_threshold))
                for acc_g, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                    if g is not None:
                        acc_g += g / len(micro)  # gradient accumulation: the mean over micro-batches
                rec["loss"].append(float(loss.detach()))
                rec["pg_loss"].append(float(pg.detach()))
                rec["kl"].append(float(kl.detach()))
                if critic is not None:
                    sq = []
                    for i in mb:
                        v = state_values(critic, episodes[i], eos_id)
                        G = torch.tensor(returns[i], dtype=torch.float64)
                        vc = old_v[i] + torch.clamp(v - old_v[i], -ppo.cliprange_value, ppo.cliprange_value)
                        sq.append(torch.maximum((v - G) ** 2, (vc - G) ** 2))
                    vl = 0.5 * torch.cat(sq).mean()
                    for acc_g, g in zip(cgrads, torch.autograd.grad(vl, list(critic.parameters()), allow_unused=True)):
                        if g is not None:
                            acc_g += g / len(micro)
                    rec["value_loss"].append(float(vl.detach()))
            grads, _ = clip_by_total_norm(grads, cfg.optim.max_grad_norm)
            opt.step(grads, steps_per_lr[step])
            if critic is not None:
                cgrads, _ = clip_by_total_norm(cgrads, cfg.optim.max_grad_norm)
                copt.step(cgrads, steps_per_lr[step])
            step += 1
            losses.append({k: sum(v) / len(v) for k, v in rec.items() if v})
    return {"advantages": advantages, "returns": returns, "losses": losses, "optimizer_steps": step}


def float64_copy(module):
    return copy.deepcopy(module).double()
