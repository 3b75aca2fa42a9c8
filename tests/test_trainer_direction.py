"""Through `Trainer.step`, for both algorithms: one PPO step raises the log-probability of a token
with a positive advantage and lowers that of a token with a negative advantage."""

from __future__ import annotations

import pytest
import torch

from vineppo.config import load_config
from vineppo.episodes import Episode
from vineppo.tokens import encode_prompt


def _trainer(tiny_model_dir, algorithm, *extra):
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from vineppo.trainer import Trainer

    cfg = load_config(None, [
        f"algorithm={algorithm}", f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "episodes.questions_per_iteration=1",
        "episodes.samples_per_question=2", "ppo.minibatch_size=2", "ppo.micro_batch_size=2", "ppo.epochs=1",
        "ppo.kl_coef=0", "ppo.whiten_advantages=false", "optim.lr=1e-3", "optim.warmup_ratio=0",
        "optim.schedule=constant", "logging.progress=false", "seed=3", *extra])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return Trainer(cfg, Accelerator(cpu=True), tok, progress=False), tok


def _next_token_logprobs(trainer, prompt_ids, tokens):
    model = trainer.unwrapped_policy()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].float()
    lp = torch.log_softmax(logits / trainer.cfg.ppo.logprob_temperature, dim=-1)
    return [float(lp[t]) for t in tokens]


@pytest.mark.parametrize("algorithm", ["vineppo", "ppo"])
def test_one_step_moves_log_probs_with_the_sign_of_the_advantage(algorithm, tiny_model_dir, one_torch_thread):
    trainer, tok = _trainer(tiny_model_dir, algorithm)
    prompt = encode_prompt(tok, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    good, bad = tok("4", add_special_tokens=False)["input_ids"][0], tok("7", add_special_tokens=False)["input_ids"][0]
    eps = [Episode(question_index=0, sample_index=j, prompt_ids=prompt, response_ids=[t], response_text=tok.decode([t]),
                   finished=False, truncated=False, reward=r, step_boundaries=[0, 1], token_starts=[0])
           for j, (t, r) in enumerate([(good, 1.0), (bad, 0.0)])]
    if algorithm == "vineppo":
        eps[0].advantages, eps[1].advantages = [1.0], [-1.0]
    else:
        # a critic that says V = 0.5 everywhere: GAE(γ=λ=1) gives A = R − V = +0.5 and −0.5
        critic = trainer.acc.unwrap_model(trainer.critic)
        with torch.no_grad():
            critic.value_head.weight.zero_()
            critic.value_head.bias.fill_(0.5)
    before = _next_token_logprobs(trainer, prompt, [good, bad])
    stats = trainer.step(eps)
    after = _next_token_logprobs(trainer, prompt, [good, bad])
    assert stats["train/optimizer_steps"] == 1
    assert stats["train/first_minibatch_ratio"] == pytest.approx(1.0, abs=1e-5)
    if algorithm == "ppo":
        assert [e.advantages for e in eps] == [pytest.approx([0.5]), pytest.approx([-0.5])]
        assert torch.isfinite(torch.tensor(stats["train/value_loss"]))
    assert after[0] > before[0] + 1e-3, (before, after)
    assert after[1] < before[1] - 1e-3, (before, after)


@pytest.mark.parametrize("algorithm", ["vineppo", "ppo"])
def test_an_empty_unfinished_response_trains_nothing_and_breaks_nothing(algorithm, tiny_model_dir, one_torch_thread):
    """A response that stopped at once without an answer has no action token (no EOS either)."""
    trainer, tok = _trainer(tiny_model_dir, algorithm)
    prompt = encode_prompt(tok, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    good = tok("4", add_special_tokens=False)["input_ids"][0]
    eps = [Episode(question_index=0, sample_index=0, prompt_ids=prompt, response_ids=[good], response_text="4",
                   finished=False, truncated=False, reward=1.0, step_boundaries=[0, 1], token_starts=[0]),
           Episode(question_index=0, sample_index=1, prompt_ids=prompt, response_ids=[], response_text="",
                   finished=False, truncated=False, reward=0.0, step_boundaries=[0, 0], token_starts=[])]
    if algorithm == "vineppo":
        eps[0].advantages, eps[1].advantages = [1.0], []
    stats = trainer.step(eps)
    assert stats["train/optimizer_steps"] == 1 and eps[1].advantages == []
    assert all(torch.isfinite(torch.tensor(v)) for k, v in stats.items() if isinstance(v, float))


@pytest.mark.parametrize("extra, critic_lr", [((), 1e-3), (("ppo.critic_lr=0.02",), 0.02)])
def test_the_critic_steps_at_its_own_learning_rate(extra, critic_lr, tiny_model_dir, one_torch_thread):
    """`ppo.critic_lr` (None: `optim.lr`) is the critic's; the policy keeps `optim.lr`. Adam's first
    step moves a parameter by its learning rate times the sign of its gradient: V = 0.5 below the
    returns 1 raises the value head's bias by exactly the critic's rate."""
    trainer, tok = _trainer(tiny_model_dir, "ppo", *extra)
    assert [g["lr"] for g in trainer.opt.param_groups] == [1e-3]
    assert [g["lr"] for g in trainer.critic_opt.param_groups] == [critic_lr]
    prompt = encode_prompt(tok, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    four = tok("4", add_special_tokens=False)["input_ids"][0]
    eps = [Episode(question_index=0, sample_index=j, prompt_ids=prompt, response_ids=[four], response_text="4",
                   finished=False, truncated=False, reward=1.0, step_boundaries=[0, 1], token_starts=[0])
           for j in range(2)]
    critic = trainer.acc.unwrap_model(trainer.critic)
    with torch.no_grad():
        critic.value_head.weight.zero_()
        critic.value_head.bias.fill_(0.5)
    trainer.step(eps)
    assert float(critic.value_head.bias) == pytest.approx(0.5 + critic_lr, rel=1e-4)
