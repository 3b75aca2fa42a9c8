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
    with pytest.raises(ConfigError, match="smallest shard holds 0 episodes"):
        validate_world(cfg, 4)  # shards of 2, 2, 2, 0 questions
    with pytest.raises(ConfigError, match="not divisible"):
        validate_world(cfg, 3)


def test_the_tiny_and_paper_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for p in sorted(root.glob("tiny/*.yaml")) + sorted(root.glob("paper/*.yaml")):
        load_config(p)
