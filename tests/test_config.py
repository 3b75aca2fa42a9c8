"""Config validation that protects a run from silently doing nothing."""

import pytest

from vineppo.config import ConfigError, load_config, validate_world

BASE = ["model.name_or_path=m"]


def test_fewer_episodes_than_a_minibatch_is_rejected():
    with pytest.raises(ConfigError, match="no optimizer step"):
        load_config(None, BASE + ["episodes.questions_per_iteration=4", "episodes.samples_per_question=4",
                                  "ppo.minibatch_size=64", "ppo.micro_batch_size=8"])
    cfg = load_config(None, BASE + ["episodes.questions_per_iteration=8", "episodes.samples_per_question=8",
                                    "ppo.minibatch_size=64", "ppo.micro_batch_size=8"])
    assert cfg.total_optimizer_steps == cfg.iterations * 2


def test_world_size_checks_every_shard_holds_a_minibatch():
    cfg = load_config(None, BASE + ["episodes.questions_per_iteration=6", "episodes.samples_per_question=4",
                                    "ppo.minibatch_size=16", "ppo.micro_batch_size=4"])
    validate_world(cfg, 1)
    validate_world(cfg, 2)  # 3 questions × 4 = 12 episodes per process ≥ 8
    with pytest.raises(ConfigError, match="ppo.minibatch_size .16. is not divisible by the 3 processes"):
        validate_world(cfg, 3)
    with pytest.raises(ConfigError, match="per-process minibatch 8 .* not a multiple of ppo.micro_batch_size 16"):
        validate_world(load_config(None, BASE + ["episodes.questions_per_iteration=8", "ppo.minibatch_size=16",
                                                 "ppo.micro_batch_size=16"]), 2)


@pytest.mark.parametrize("questions,world", [(3, 2), (6, 4), (7, 8), (66, 8)])
def test_uneven_question_shards_are_refused_for_every_process_count(questions, world):
    """Shards of unequal size (3 questions on 2 processes: 2 and 1) would give the processes different
    numbers of micro-batches, i.e. of FSDP2 / ZeRO-3 collectives: refused with one line naming the
    setting and the process count, before anything starts."""
    cfg = load_config(None, BASE + [f"episodes.questions_per_iteration={questions}", "episodes.samples_per_question=8",
                                    "ppo.minibatch_size=8", "ppo.micro_batch_size=1"])
    validate_world(cfg, 1)
    with pytest.raises(ConfigError) as e:
        validate_world(cfg, world)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"episodes.questions_per_iteration ({questions}) is not divisible by the {world} processes" in msg
    validate_world(load_config(None, BASE + [f"episodes.questions_per_iteration={2 * world}",
                                             "episodes.samples_per_question=8", "ppo.minibatch_size=8",
                                             "ppo.micro_batch_size=1"]), world)


def test_the_tiny_and_paper_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for p in sorted(root.glob("tiny/*.yaml")) + sorted(root.glob("paper/*.yaml")):
        load_config(p)


def test_the_outcome_credit_ablation_needs_only_the_prompt_state():
    with pytest.raises(ConfigError, match=r"^mc.credit=outcome uses only V̂\(s_0\): set mc.max_states_per_response: 0 \(got None"):
        load_config(None, BASE + ["mc.credit=outcome"])
    with pytest.raises(ConfigError, match=r"got 3;"):
        load_config(None, BASE + ["mc.credit=outcome", "mc.max_states_per_response=3"])
    cfg = load_config(None, BASE + ["mc.credit=outcome", "mc.max_states_per_response=0"])
    assert (cfg.mc.credit, cfg.mc.max_states_per_response) == ("outcome", 0)
    assert load_config(None, BASE).mc.credit == "step"
    with pytest.raises(ConfigError, match="mc.credit"):
        load_config(None, BASE + ["mc.credit=steps"])


@pytest.mark.parametrize("value", ["0", "-1e-3", "nan"])
def test_a_critic_learning_rate_must_be_positive(value):
    with pytest.raises(ConfigError, match=rf"^ppo.critic_lr must be > 0 \(or null: optim.lr\), got "):
        load_config(None, BASE + [f"ppo.critic_lr={value}"])
    assert load_config(None, BASE + ["ppo.critic_lr=3e-3"]).ppo.critic_lr == 3e-3
    assert load_config(None, BASE).ppo.critic_lr is None
