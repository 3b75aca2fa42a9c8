"""`Trainer.step`'s wiring that a CPU run cannot see in its numbers: the device every batch and the
offloaded reference are put on, the critic-only warm-up being PPO's alone, and the progress bar
(shown only when asked, labelled, cleared when done)."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from vineppo.episodes import Episode
from vineppo.tokens import encode_prompt
from test_trainer_direction import _next_token_logprobs, _trainer


def _episodes(tok, *advantages):
    prompt = encode_prompt(tok, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    good, bad = tok("4", add_special_tokens=False)["input_ids"][0], tok("7", add_special_tokens=False)["input_ids"][0]
    eps = [Episode(question_index=0, sample_index=j, prompt_ids=prompt, response_ids=[t], response_text=tok.decode([t]),
                   finished=False, truncated=False, reward=r, step_boundaries=[0, 1], token_starts=[0])
           for j, (t, r) in enumerate([(good, 1.0), (bad, 0.0)])]
    for e, a in zip(eps, advantages):
        e.advantages = [a]
    return prompt, (good, bad), eps


def _spy(monkeypatch, owner, name, note):
    """Replace `owner.name` by a pass-through that first records `note(*args, **kw)`; returns the
    records."""
    calls, real = [], getattr(owner, name)

    def wrapper(*args, **kw):
        calls.append(note(*args, **kw))
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_the_critic_warmup_never_holds_back_a_method_without_a_critic(tiny_model_dir, one_torch_thread):
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.critic_warmup_iterations=2")
    prompt, tokens, eps = _episodes(tok, 1.0, -1.0)
    before = _next_token_logprobs(trainer, prompt, tokens)
    stats = trainer.step(eps, iteration=0)
    after = _next_token_logprobs(trainer, prompt, tokens)
    assert stats["train/optimizer_steps"] == 1
    assert after[0] > before[0] + 1e-3 and after[1] < before[1] - 1e-3


def test_every_batch_is_built_on_the_process_device(tiny_model_dir, one_torch_thread, monkeypatch):
    import vineppo.trainer as trainer_mod

    devices = _spy(monkeypatch, trainer_mod, "collate", lambda episodes, eos_id, pad_id, device, *a, **kw: device)
    trainer, tok = _trainer(tiny_model_dir, "ppo")
    trainer.step(_episodes(tok)[2])
    assert devices and all(d == trainer.acc.device for d in devices) and trainer.acc.device is not None


def test_an_offloaded_reference_visits_the_device_for_its_log_probs_only(tiny_model_dir, one_torch_thread,
                                                                        monkeypatch):
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "model.reference_offload=true", "ppo.kl_coef=0.1")
    moves = _spy(monkeypatch, trainer.reference, "to", lambda *args, **kw: args[0] if args else kw.get("device"))
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert moves == [trainer.acc.device, "cpu"]


def test_an_offloaded_reference_under_lora_is_the_base_model(tiny_model_dir, one_torch_thread):
    # with LoRA there is no reference copy to move: the base weights (adapters off) are the reference
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "model.reference_offload=true", "model.lora.r=4",
                            "ppo.kl_coef=0.1")
    assert trainer.reference is None
    stats = trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert stats["train/optimizer_steps"] == 1


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [False, True])
def test_the_log_prob_bar_shows_only_when_asked_and_is_cleared(progress, tiny_model_dir, one_torch_thread,
                                                                monkeypatch):
    trainer, tok = _trainer(tiny_model_dir, "vineppo")
    trainer.progress = progress
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    out = term.getvalue()
    if not progress:
        assert out == ""  # a terminal, but no bar unless asked
    else:
        assert "train: log-probs:   0%|" in out and "train: PPO steps:   0%|" in out  # bars that know their length
        assert "\n" not in out  # leave=False: each bar is erased when done, no line is left behind


def test_step_metrics_hand_computed_on_a_fake_clock(tiny_model_dir, one_torch_thread, monkeypatch):
    """Two epochs over two episodes of 1 and 3 action tokens; the clock reads 10 s at the start,
    10.5 s after the log-probs and 11 s at the end (both phases under a second)."""
    from types import SimpleNamespace

    import vineppo.trainer as trainer_mod

    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.epochs=2")
    prompt, (good, bad), eps = _episodes(tok, 1.0, -1.0)
    eps[1].response_ids = [bad, bad, bad]
    eps[1].response_text = tok.decode(eps[1].response_ids)
    eps[1].step_boundaries, eps[1].token_starts = [0, 3], [0, 1, 2]
    eps[1].advantages = [-1.0, -1.0, -1.0]
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=iter([10.0, 10.5, 11.0]).__next__))
    out = trainer.step(eps)
    assert out["logprobs/seconds"] == 0.5 and out["train/seconds"] == 0.5
    assert out["logprobs/tokens"] == 4 and out["train/tokens"] == 8  # 4 action tokens, trained twice
    assert out["logprobs/tokens_per_s"] == 4 / 0.5 and out["train/tokens_per_s"] == 4 * 2 / 0.5
    assert out["train/optimizer_steps"] == 2 and out["train/lr"] == 1e-3
    assert out["train/first_minibatch_ratio"] == pytest.approx(1.0, abs=1e-6)  # nothing has moved yet
    assert out["train/ratio"] != pytest.approx(1.0, abs=1e-6)  # the mean over both epochs: the second moved
    assert [sorted(w["episodes"]) for w in out["train/whiten_stats"]] == [[0, 1], [0, 1]]
    assert "epoch" not in out and "whiten" not in out
    assert all(k.startswith(("train/", "logprobs/", "sync/")) for k in out), sorted(out)


def test_ppo_advantages_after_an_empty_response_still_come(tiny_model_dir, one_torch_thread):
    # an empty response (no action token) first: the next episode still gets its GAE advantages
    trainer, tok = _trainer(tiny_model_dir, "ppo")
    prompt, (good, bad), eps = _episodes(tok)
    eps[0].response_ids, eps[0].response_text, eps[0].step_boundaries, eps[0].token_starts = [], "", [0, 0], []
    critic = trainer.acc.unwrap_model(trainer.critic)
    with torch.no_grad():
        critic.value_head.weight.zero_()
        critic.value_head.bias.fill_(0.25)
    trainer.step(eps)
    assert eps[0].advantages == [] and eps[1].advantages == [pytest.approx(-0.25)]  # R − V = 0 − 0.25
    assert eps[1].meta["returns"] == [pytest.approx(0.0)] and eps[1].meta["critic_values"] == [pytest.approx(0.25)]


def test_gather_iteration_joins_every_rank_in_rank_order(monkeypatch):
    """The multi-process branch without launching processes: `gather_object` concatenates the
    ranks' lists (rank 0's first); the columns come back as lists, returns and critic values only
    where the algorithm has them."""
    from types import SimpleNamespace

    import accelerate.utils

    from vineppo.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.acc = SimpleNamespace(num_processes=1)
    eps = ("e0",)
    same = trainer._gather_iteration(eps, [[1.0]], None, [[-1.0]], [[-2.0]], [])
    assert same == (["e0"], [[1.0]], None, [[-1.0]], [[-2.0]], [])  # one process: its own, as a list

    trainer.acc = SimpleNamespace(num_processes=2)
    rank1 = [("e1", [0.5], [1.5], [-0.1], [-0.2], [0.3])]
    sent = []
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda local: sent.append(local) or [*local, *rank1])
    out = trainer._gather_iteration(["e0"], [[1.0]], [[2.0]], [[-1.0]], [[-2.0]], [[3.0]])
    assert sent == [[("e0", [1.0], [2.0], [-1.0], [-2.0], [3.0])]]
    assert out == (["e0", "e1"], [[1.0], [0.5]], [[2.0], [1.5]], [[-1.0], [-0.1]], [[-2.0], [-0.2]], [[3.0], [0.3]])
    assert all(isinstance(col, list) for col in out)

    # no critic (VinePPO, GRPO): no returns, no values
    rank1[:] = [("e1", [0.5], None, [-0.1], [-0.2], None)]
    sent.clear()
    out = trainer._gather_iteration(["e0"], [[1.0]], None, [[-1.0]], [[-2.0]], [])
    assert sent == [[("e0", [1.0], None, [-1.0], [-2.0], None)]]
    assert out == (["e0", "e1"], [[1.0], [0.5]], None, [[-1.0], [-0.1]], [[-2.0], [-0.2]], [])


def test_a_step_without_advantages_names_the_missing_phase(tiny_model_dir, one_torch_thread):
    trainer, tok = _trainer(tiny_model_dir, "vineppo")
    eps = _episodes(tok, 1.0)[2]  # the second episode has no advantages
    with pytest.raises(ValueError, match=r"^vineppo episodes need advantages \(the loop's credit phase\) "
                                         r"before training$"):
        trainer.step(eps)


def test_a_critic_free_step_gathers_no_returns_and_no_values(tiny_model_dir, one_torch_thread, monkeypatch):
    trainer, tok = _trainer(tiny_model_dir, "vineppo")
    seen = _spy(monkeypatch, trainer, "_gather_iteration",
                lambda episodes, advs, rets, old_lp, ref_lp, old_v: (rets, old_v))
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert seen == [(None, [])]


def test_the_minibatches_are_drawn_for_this_process_among_all(tiny_model_dir, one_torch_thread, monkeypatch):
    import vineppo.trainer as trainer_mod

    calls = _spy(monkeypatch, trainer_mod, "minibatch_schedule", lambda *args, **kw: (args, kw))
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.epochs=2")
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    acc = trainer.acc
    assert calls == [((2, 2, 2, 3, acc.process_index, acc.num_processes), {})]  # episodes, minibatch, epochs, seed


def test_ppo_critic_warmup_trains_the_critic_and_leaves_the_policy(tiny_model_dir, one_torch_thread):
    trainer, tok = _trainer(tiny_model_dir, "ppo", "ppo.critic_warmup_iterations=1")
    prompt, tokens, eps = _episodes(tok)
    eps[1].reward = 1.0  # both returns 1 above V = 0.5: Adam's first step raises the bias by the rate
    critic = trainer.acc.unwrap_model(trainer.critic)
    with torch.no_grad():
        critic.value_head.weight.zero_()
        critic.value_head.bias.fill_(0.5)
    before = _next_token_logprobs(trainer, prompt, tokens)
    out = trainer.step(eps, iteration=0)
    assert _next_token_logprobs(trainer, prompt, tokens) == before  # the policy did not move at all
    assert out["train/critic_only"] == 1.0 and out["train/optimizer_steps"] == 0
    assert float(critic.value_head.bias) == pytest.approx(0.5 + 1e-3, rel=1e-4)  # the critic learned
    out = trainer.step(_episodes(tok)[2], iteration=1)  # warm-up over: both learn
    assert out["train/critic_only"] == 0.0 and out["train/optimizer_steps"] == 1
    assert _next_token_logprobs(trainer, prompt, tokens) != before


def test_each_bar_counts_to_its_total(tiny_model_dir, one_torch_thread, monkeypatch):
    import vineppo.trainer as trainer_mod

    bars = []

    class Bar:  # tqdm's interface as the trainer uses it, recording instead of drawing
        def __init__(self, iterable=None, total=None, **kw):
            self.items = None if iterable is None else list(iterable)
            self.total = len(self.items) if self.items is not None else total
            self.desc, self.n = kw.get("desc"), 0
            bars.append(self)

        def __iter__(self):
            for x in self.items:
                yield x
                self.n += 1

        def update(self, k=1):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(trainer_mod, "tqdm", Bar)
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.epochs=2")
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert [(b.desc, b.total, b.n) for b in bars] == [("train: log-probs", 1, 1), ("train: PPO steps", 2, 2)]


def test_a_step_with_no_episodes_trains_nothing(tiny_model_dir, one_torch_thread):
    trainer, tok = _trainer(tiny_model_dir, "vineppo")
    out = trainer.step([])
    assert (out["train/optimizer_steps"], out["train/tokens"], out["logprobs/tokens"]) == (0, 0, 0)
    assert out["train/whiten_stats"] == [] and "train/ratio" not in out and "train/first_minibatch_ratio" not in out


def test_a_minibatch_whitens_across_processes_exactly_when_there_are_several(tiny_model_dir, one_torch_thread,
                                                                             monkeypatch):
    import vineppo.trainer as trainer_mod

    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.whiten_advantages=true")
    flags, real = [], trainer_mod.masked_whiten

    def spy(x, mask, **kw):
        flags.append(kw.get("distributed", "not passed"))
        return real(x, mask)  # whitened here, whatever the flag: no process group in this test

    monkeypatch.setattr(trainer_mod, "masked_whiten", spy)
    eps = _episodes(tok, 1.0, -1.0)[2]
    args = ([[1.0], [-1.0]], None, [[-1.0], [-1.0]], [[-1.0], [-1.0]], [])
    real_acc = trainer.acc

    class SeveralProcesses:  # the real accelerator, but reporting n processes
        def __init__(self, n):
            self.num_processes = n

        def __getattr__(self, name):
            return getattr(real_acc, name)

    for n in (1, 2):
        trainer.acc = SeveralProcesses(n)
        trainer._minibatch_step(eps, [0, 1], *args, critic_only=False)
    assert flags == [False, True]


@pytest.mark.parametrize("algorithm", ["vineppo", "ppo"])
def test_gradients_accumulate_for_every_model_that_learns(algorithm, tiny_model_dir, one_torch_thread, monkeypatch):
    trainer, tok = _trainer(tiny_model_dir, algorithm)
    seen = _spy(monkeypatch, trainer.dist, "accumulate", lambda *models: models)
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    expected = (trainer.actor,) if algorithm == "vineppo" else (trainer.actor, trainer.critic)
    assert len(seen) == 1 and len(seen[0]) == len(expected) and all(a is b for a, b in zip(seen[0], expected))


def test_the_ratio_threshold_reaches_the_policy_loss(tiny_model_dir, one_torch_thread):
    # a second epoch's ratios move off 1: a threshold just above 1 skips that minibatch, not the first
    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.epochs=2", "ppo.ratio_threshold=1.000001")
    out = trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert out["train/ratio_skipped"] == 0.5


def test_the_loss_terms_get_the_configured_clamps_skip_flags_and_model(tiny_model_dir, one_torch_thread,
                                                                       monkeypatch):
    import vineppo.trainer as trainer_mod

    trainer, tok = _trainer(tiny_model_dir, "vineppo", "ppo.epochs=2", "ppo.ratio_threshold=1.000001",
                            "ppo.kl_coef=0.1", "ppo.kl_clamp_min=0.5", "ppo.kl_clamp_max=7.0")
    clamps = _spy(monkeypatch, trainer_mod, "kl_penalty_loss", lambda logp, ref, mask, coef, lo, hi: (coef, lo, hi))
    skips = _spy(monkeypatch, trainer_mod, "actor_loss", lambda pg, kl, skipped: skipped)
    backward_models = _spy(monkeypatch, trainer.dist, "backward", lambda model, loss: model)
    trainer.step(_episodes(tok, 1.0, -1.0)[2])
    assert clamps == [(0.1, 0.5, 7.0)] * 2
    assert skips == [False, True]  # the second epoch's ratios passed the threshold: its whole loss is skipped
    assert len(backward_models) == 2 and all(m is trainer.actor for m in backward_models)


def test_the_critic_loss_gets_its_clip_range_and_its_own_backward(tiny_model_dir, one_torch_thread, monkeypatch):
    import vineppo.trainer as trainer_mod

    trainer, tok = _trainer(tiny_model_dir, "ppo", "ppo.cliprange_value=0.05")
    clips = _spy(monkeypatch, trainer_mod, "value_loss", lambda v, v_old, g, mask, clip: clip)
    backward_models = _spy(monkeypatch, trainer.dist, "backward", lambda model, loss: model)
    trainer.step(_episodes(tok)[2])
    assert clips == [0.05]
    assert len(backward_models) == 2 and backward_models[0] is trainer.actor and backward_models[1] is trainer.critic


@pytest.mark.parametrize("norms", [(3.0, 5.0), (None, None)])
def test_each_model_reports_the_gradient_norm_its_optimizer_step_returned(norms, tiny_model_dir, one_torch_thread,
                                                                         monkeypatch):
    # (None, None): a strategy that reports no norm (DeepSpeed clips inside its engine)
    trainer, tok = _trainer(tiny_model_dir, "ppo")
    real = trainer.dist.optimizer_step

    def step_spy(model, opt, max_norm):
        real(model, opt, max_norm)
        return norms[0] if model is trainer.actor else norms[1]

    monkeypatch.setattr(trainer.dist, "optimizer_step", step_spy)
    out = trainer.step(_episodes(tok)[2])
    if norms[0] is None:
        assert "train/grad_norm" not in out and "train/value_grad_norm" not in out
    else:
        assert (out["train/grad_norm"], out["train/value_grad_norm"]) == norms


def test_a_minibatch_out_of_step_with_accumulation_is_an_error(tiny_model_dir, one_torch_thread, monkeypatch):
    trainer, tok = _trainer(tiny_model_dir, "vineppo")
    monkeypatch.setattr(type(trainer.dist), "sync_gradients", property(lambda self: False))
    with pytest.raises(RuntimeError, match="^gradient accumulation out of step with the minibatch$"):
        trainer.step(_episodes(tok, 1.0, -1.0)[2])
