"""The 8 paper configs (configs/paper/) load and match the spec's §8 tables, value by value.

The expected values below are transcribed by hand from shared/spec/vineppo.md §8 ("Numbers to copy
into configs"), §2 (vLLM knobs), §4 (SFT checkpoints, save steps) and §1.6 (batching).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vineppo.config import load_config

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"

# Common to all 8 runs (spec §8, first table).
COMMON = {
    "seed": 2746318213,
    "episodes.questions_per_iteration": 64,
    "episodes.samples_per_question": 8,
    "sampling.temperature": 0.6,
    "sampling.top_p": 0.9,
    "sampling.max_new_tokens": 1024,
    "sampling.stop": ["\n\n\nProblem:"],
    "ppo.epochs": 2,
    "ppo.minibatch_size": 64,
    "optim.lr": 1e-6,
    "optim.betas": (0.9, 0.999),
    "optim.eps": 1e-8,
    "optim.weight_decay": 0.0,
    "optim.max_grad_norm": 1.0,
    "optim.warmup_ratio": 0.03,
    "ppo.cliprange": 0.2,
    "ppo.ratio_threshold": 10.0,
    "ppo.kl_coef": 1e-4,
    "ppo.kl_clamp_min": 0.0,
    "ppo.kl_clamp_max": 10.0,
    "ppo.gamma": 1.0,
    "ppo.logprob_temperature": 0.6,
    "data.max_prompt_tokens": 1512,
    "data.source": None,
    "data.validation_size": None,
    "model.dtype": "bfloat16",
    "model.gradient_checkpointing": True,
    "model.attn_implementation": "flash_attention_2",
}

# PPO baseline specifics (spec §1.5 / §8): GAE λ = 1, value clip 0.2.
PPO_ONLY = {"ppo.lam": 1.0, "ppo.cliprange_value": 0.2}

# SFT initial checkpoints (spec §4).
MODEL_IDS = {
    ("rho1b", "gsm8k"): "realtreetune/rho-1b-sft-GSM8K",
    ("rho1b", "math"): "realtreetune/rho-1b-sft-MATH",
    ("deepseekmath7b", "gsm8k"): "realtreetune/deepseekmath-7b-sft-GSM8K",
    ("deepseekmath7b", "math"): "realtreetune/deepseekmath-7b-sft-MATH-v2",
}

# Per-run table (spec §8, second table; vLLM extras from §2; save steps from §4; per-device batch
# from §1.6: Rho 64 / 4 GPUs = 16, DeepSeek 64 / 8 GPUs = 8).
# columns: iterations, K, MC step cap, max seq (q+r), save_every, max_num_seqs, swap_space,
#          prefix caching (on in every VinePPO run: vLLM V1 splits n=K into K requests), micro batch
PER_RUN = {
    "rho1b_math_vineppo":           (1000, 9, None, 2048, 10, 512, 8, True, 16),
    "rho1b_gsm8k_vineppo":          (650, 9, 25, 2048, 10, 512, 8, True, 16),
    "deepseekmath7b_math_vineppo":  (1000, 9, None, 2499, 10, 256, 32, True, 8),
    "deepseekmath7b_gsm8k_vineppo": (650, 9, 25, 2499, 10, 256, 32, True, 8),
    "rho1b_math_ppo":               (1000, None, None, 2048, 40, 512, 8, False, 16),
    "rho1b_gsm8k_ppo":              (650, None, None, 2048, 40, 512, 8, False, 16),
    "deepseekmath7b_math_ppo":      (1000, None, None, 2499, 30, 256, 16, False, 8),
    "deepseekmath7b_gsm8k_ppo":     (650, None, None, 2499, 30, 256, 16, False, 8),
}


def _get(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# Critic-free baselines at the PPO/VinePPO runs' settings: name -> (iterations,
# loss aggregation of the method's paper).
GROUP_RUNS = {
    "rho1b_math_grpo": (1000, "seq_mean_token_mean"),
    "rho1b_gsm8k_grpo": (650, "seq_mean_token_mean"),
    "rho1b_math_rloo": (1000, "seq_mean_token_sum_norm"),
    "rho1b_gsm8k_rloo": (650, "seq_mean_token_sum_norm"),
    "deepseekmath7b_math_grpo": (1000, "seq_mean_token_mean"),
    "deepseekmath7b_gsm8k_grpo": (650, "seq_mean_token_mean"),
    "deepseekmath7b_math_rloo": (1000, "seq_mean_token_sum_norm"),
    "deepseekmath7b_gsm8k_rloo": (650, "seq_mean_token_sum_norm"),
}


def test_exactly_the_eight_paper_runs_and_the_group_baselines():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted([*PER_RUN, *GROUP_RUNS])


@pytest.mark.parametrize("name", sorted(GROUP_RUNS))
def test_group_baseline_config_matches_its_ppo_run(name):
    """Same batch (64 × 8), LR, KL, epochs, minibatch and iterations as the PPO run of its task;
    no whitening; the method's loss aggregation."""
    from vineppo.config import loss_aggregation_for, whiten_advantages_for

    cfg = load_config(PAPER / f"{name}.yaml")
    model, task, algorithm = name.split("_")
    iters, aggregation = GROUP_RUNS[name]
    ppo = load_config(PAPER / f"{model}_{task}_ppo.yaml")
    assert cfg.algorithm == algorithm and cfg.data.task == task
    assert cfg.iterations == iters == ppo.iterations
    assert cfg.model.name_or_path == MODEL_IDS[(model, task)]
    for key, expected in COMMON.items():
        assert _get(cfg, key) == _get(ppo, key), key
    assert cfg.total_optimizer_steps == ppo.total_optimizer_steps
    assert whiten_advantages_for(cfg) is False
    assert loss_aggregation_for(cfg) == aggregation
    # the PPO run's checkpoints, evaluation grid, batch split, context and engine limits
    for key in ("save_every", "eval_every", "ppo.micro_batch_size", "sampling.max_sequence_length",
                "model.reference_offload", "engine.max_num_seqs", "engine.swap_space",
                "engine.enable_prefix_caching", "checkpoint.keep_trainer_state"):
        assert _get(cfg, key) == _get(ppo, key), key
    # one trained model, like VinePPO: VinePPO's engine share (its launch file's plan)
    vine = load_config(PAPER / f"{model}_{task}_vineppo.yaml")
    assert cfg.engine.gpu_memory_utilization == vine.engine.gpu_memory_utilization
    assert _launch_file(name) == _launch_file(f"{model}_{task}_vineppo")


@pytest.mark.parametrize("name", sorted(PER_RUN))
def test_paper_config_matches_spec(name):
    cfg = load_config(PAPER / f"{name}.yaml")
    model, task, algorithm = name.split("_")
    iters, k, cap, max_seq, save_every, max_num_seqs, swap, prefix, micro = PER_RUN[name]

    assert cfg.algorithm == algorithm
    assert cfg.data.task == task
    assert cfg.model.name_or_path == MODEL_IDS[(model, task)]
    assert cfg.iterations == iters
    assert cfg.save_every == save_every
    assert cfg.sampling.max_sequence_length == max_seq
    assert cfg.engine.max_num_seqs == max_num_seqs
    assert cfg.engine.swap_space == swap
    assert cfg.engine.enable_prefix_caching is prefix
    assert cfg.ppo.micro_batch_size == micro
    if algorithm == "vineppo":
        assert cfg.mc.k == k
        assert cfg.mc.max_states_per_response == cap
    from vineppo.config import whiten_advantages_for
    assert whiten_advantages_for(cfg) is True  # the algorithm's default (official: whitened)
    for key, expected in {**COMMON, **PPO_ONLY}.items():
        value = _get(cfg, key)
        if isinstance(expected, float):
            assert value == pytest.approx(expected), key
        else:
            assert value == expected, key
    # 2 epochs × 512 / 64 = 16 optimizer steps per iteration: 16,000 (MATH) / 10,400 (GSM8K)
    assert cfg.total_optimizer_steps == {1000: 16_000, 650: 10_400}[iters]
    # the global minibatch splits evenly over the paper's GPU count (4 for Rho, 8 for DeepSeek)
    gpus = 4 if model == "rho1b" else 8
    assert cfg.ppo.minibatch_size // gpus == micro


def _launch_file(name: str) -> str:
    """The accelerate config named by the header comment's launch command of configs/paper/NAME.yaml."""
    text = (PAPER / f"{name}.yaml").read_text()
    launch = [line for line in text.splitlines() if "--config_file" in line]
    assert launch, "the header comment gives the accelerate launch command"
    assert f"--config configs/paper/{name}.yaml --output-dir runs/{name}" in text
    return launch[0].split("--config_file")[1].split()[0]


@pytest.mark.parametrize("name", sorted([*PER_RUN, *GROUP_RUNS]))
def test_paper_config_names_its_launch_file(name):
    path = _launch_file(name)
    assert (PAPER.parents[1] / path).is_file(), path
