"""End-to-end training on CPU: VinePPO and PPO iterations on a tiny model over real GSM8K rows,
multi-process whitening under `accelerate launch`, resume after a kill, corrupted checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port
from vineppo.config import load_config
from vineppo.loop import train

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 32


def tiny_cfg(model_dir: Path, data_dir: Path, algorithm: str, *extra: str):
    return load_config(None, [
        f"algorithm={algorithm}", f"model.name_or_path={model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "data.task=gsm8k", f"data.source={data_dir}",
        "data.validation_size=0", "sampling.max_new_tokens=48", "sampling.max_sequence_length=256",
        "episodes.questions_per_iteration=8", "episodes.samples_per_question=4", "mc.k=3",
        "ppo.minibatch_size=16", "ppo.micro_batch_size=8", "optim.lr=1e-4", "iterations=2", "save_every=2",
        "engine.backend=hf", "logging.progress=false", "seed=7", *extra])


@pytest.fixture(scope="session")
def sft_gsm8k(tmp_path_factory, shared_data_dir):
    """A tiny Llama briefly fine-tuned on the 32 shortest real GSM8K train rows (so rewards are mixed)."""
    from vineppo.sft import SFTConfig, sft
    from vineppo.tasks import get_task
    from vineppo.tiny import TinyModelConfig, build_model, build_tokenizer

    root = tmp_path_factory.mktemp("sft_gsm8k")
    task = get_task("gsm8k")
    rows = [json.loads(l) for l in open(shared_data_dir / "gsm8k" / "train.jsonl")]
    rows = sorted(rows, key=lambda r: len(r["question"]) + len(task.gold_solution(r)))[:N_ROWS]
    data = root / "data"
    data.mkdir()
    for split in ("train", "test"):
        with open(data / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    texts = [task.prompt(r) + task.sft_target(r) for r in rows] * 4
    tok = build_tokenizer(texts, 400)
    model = build_model(tok, TinyModelConfig(num_layers=2))
    sft(model, tok, task, rows, SFTConfig(max_steps=60, batch_size=16, micro_batch_size=16, lr=3e-3,
                                          warmup_ratio=0.05), progress=False, out_dir=root / "model")
    return root / "model", data


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


def _greedy_equal(engine, model_dir: Path, data_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.engine.base import SamplingParams
    from vineppo.tasks import get_task
    from vineppo.tokens import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    task = get_task("gsm8k")
    rows = [json.loads(l) for l in open(data_dir / "train.jsonl")][:4]
    prompts = [encode_prompt(tok, task.prompt(r)) for r in rows]
    got = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=24))
    for p, c in zip(prompts, got):
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=24, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id)]
        assert c[0].token_ids == ref


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,backend", [
    ("vineppo", "hf"), ("ppo", "hf"), pytest.param("vineppo", "vllm", marks=pytest.mark.vllm)])
def test_two_iterations_train_and_sync(algorithm, backend, sft_gsm8k, tmp_path):
    model_dir, data_dir = sft_gsm8k
    cfg = tiny_cfg(model_dir, data_dir, algorithm, f"engine.backend={backend}")
    res = train(cfg, tmp_path / "run", keep_engine=True)
    try:
        rows = [json.loads(l) for l in open(res.run_dir / "metrics.jsonl")]
        assert [r["iteration"] for r in rows] == [1, 2]
        for r in rows:
            for key in ("reward/mean", "response/length_tokens", "train/pg_loss", "train/kl", "train/clip_frac",
                        "train/ratio", "generate/seconds", "train/seconds", "generate/tokens_per_s"):
                assert key in r, key
            assert r["train/optimizer_steps"] > 0
            # the first minibatch is on-policy (old log-probs = current ones) and the engine sampled
            # with the trainer's weights: both canaries are tight, after every weight push too
            assert r["train/first_minibatch_ratio"] == pytest.approx(1.0, abs=1e-5)
            assert r["sync/logprob_gap"] < 1e-4, r["sync/logprob_gap"]
        assert (res.run_dir / "config.yaml").is_file()
        if algorithm == "vineppo":
            assert rows[0]["mc/unique_states"] < rows[0]["mc/states"]  # V(s0) shared at least
            assert rows[0]["mc/rollouts"] == 3 * rows[0]["mc/unique_states"]
            assert "mc/value_variance" in rows[0]
        else:
            assert "train/value_loss" in rows[0]
        assert 0 < sum(r["reward/mean"] for r in rows) / 2 < 1, "the SFT start should give mixed rewards"
        ck = res.run_dir / "checkpoints" / "iter_000002"
        before, after = _weights(model_dir), _weights(ck)
        changed = sum(not torch.equal(before[k], after[k]) for k in before)
        assert changed > len(before) // 2
        # the engine runs the trained weights
        _greedy_equal(res.engine, ck, data_dir)
    finally:
        if res.engine is not None:
            res.engine.close()


def _run_cli(args: list[str], env_extra: dict | None = None, launcher: list[str] | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = (launcher or [sys.executable, "-m"]) + ["vineppo", "train"] + args
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def _cli_overrides(model_dir, data_dir, algorithm="vineppo"):
    return [
        f"algorithm={algorithm}", f"model.name_or_path={model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "data.task=gsm8k", f"data.source={data_dir}",
        "data.validation_size=0", "sampling.max_new_tokens=40", "sampling.max_sequence_length=256",
        "episodes.questions_per_iteration=4", "episodes.samples_per_question=4", "mc.k=2",
        "ppo.minibatch_size=8", "ppo.micro_batch_size=4", "optim.lr=1e-4", "engine.backend=hf",
        "logging.progress=false", "logging.dump_episodes=true", "seed=11"]


def _state_tensors(d: Path) -> dict[str, torch.Tensor]:
    """Every tensor under a trainer_state directory (weights, optimizer moments, schedulers, RNG)."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            out[prefix] = torch.tensor(float(obj), dtype=torch.float64)

    for f in sorted(d.rglob("*")):
        rel = str(f.relative_to(d))
        if f.suffix == ".safetensors":
            walk(rel, load_file(str(f)))
        elif f.suffix in (".bin", ".pt", ".pth", ".pkl"):
            walk(rel, torch.load(f, map_location="cpu", weights_only=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["vineppo", "ppo"])
def test_resume_after_kill_equals_straight_run(algorithm, sft_gsm8k, tmp_path):
    model_dir, data_dir = sft_gsm8k
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("{}\n")
    common = (["--config", str(cfg_file)] + _cli_overrides(model_dir, data_dir, algorithm)
              + ["iterations=3", "save_every=1"])
    a = _run_cli(["--output-dir", str(tmp_path / "a")] + common)
    assert a.returncode == 0, a.stderr[-3000:]
    b = _run_cli(["--output-dir", str(tmp_path / "b")] + common, {"VINEPPO_DEBUG_KILL_AFTER_ITERATION": "2"})
    assert b.returncode != 0  # killed
    assert not (tmp_path / "b" / "checkpoints" / "iter_000003").exists()
    b2 = _run_cli(["--output-dir", str(tmp_path / "b"), "--resume"] + common)
    assert b2.returncode == 0, b2.stderr[-3000:]
    ea = [json.loads(l) for l in open(tmp_path / "a" / "episodes" / "iter_000003.rank0.jsonl")]
    eb = [json.loads(l) for l in open(tmp_path / "b" / "episodes" / "iter_000003.rank0.jsonl")]
    assert [e["response_ids"] for e in ea] == [e["response_ids"] for e in eb]
    assert [e["advantages"] for e in ea] == [pytest.approx(e["advantages"], abs=1e-5) for e in eb]
    wa = _weights(tmp_path / "a" / "checkpoints" / "iter_000003")
    wb = _weights(tmp_path / "b" / "checkpoints" / "iter_000003")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # the whole trainer state — the policy's and (PPO) the critic's weights, both optimizers'
    # moments, both LR schedulers — equals the straight run's
    sa = _state_tensors(tmp_path / "a" / "checkpoints" / "iter_000003" / "trainer_state")
    sb = _state_tensors(tmp_path / "b" / "checkpoints" / "iter_000003" / "trainer_state")
    assert sa.keys() == sb.keys() and len(sa) > 0
    if algorithm == "ppo":
        assert any("value_head" in k for k in sa), "the critic must be saved with the run"
        first_moments = sum(k.endswith(".exp_avg") for k in sa)
        assert first_moments > len(wa), "and its optimizer (AdamW moments for policy + critic)"
    for k in sa:
        if "random_states" in k:
            continue
        torch.testing.assert_close(sa[k].double(), sb[k].double(), rtol=1e-5, atol=1e-6, msg=k)
    ma = [json.loads(l)["iteration"] for l in open(tmp_path / "b" / "metrics.jsonl")]
    assert ma == [1, 2, 3]
    rows_b = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
    assert rows_b[2]["sync/logprob_gap"] < 1e-4  # the resumed engine holds the trainer's weights
    if algorithm == "ppo":
        assert all(torch.isfinite(torch.tensor(r["train/value_loss"])) for r in rows_b)

    # a corrupted newest checkpoint is skipped (with a warning) and the previous one is used
    from vineppo.checkpoint import latest_checkpoint
    f = tmp_path / "b" / "checkpoints" / "iter_000003" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    path, it = latest_checkpoint(tmp_path / "b")
    assert it == 2 and path.name == "iter_000002"


@pytest.mark.slow
def test_accelerate_two_processes_whitening_is_global(sft_gsm8k, tmp_path):
    model_dir, data_dir = sft_gsm8k
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("{}\n")
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launcher = [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    r = _run_cli(["--config", str(cfg_file), "--output-dir", str(tmp_path / "run")]
                 + _cli_overrides(model_dir, data_dir) + ["iterations=1", "save_every=1"], launcher=launcher)
    assert r.returncode == 0, r.stderr[-4000:]
    ep = tmp_path / "run" / "episodes"
    eps = [[json.loads(l) for l in open(ep / f"iter_000001.rank{k}.jsonl")] for k in range(2)]
    assert len(eps[0]) == len(eps[1]) == 8  # 2 questions × 4 samples per rank
    assert not {e["question_index"] for e in eps[0]} & {e["question_index"] for e in eps[1]}
    w = [json.load(open(ep / f"iter_000001.rank{k}.whiten.json")) for k in range(2)]
    assert len(w[0]) == len(w[1]) == 4  # 2 epochs × (16 episodes / minibatch 8)
    for m0, m1 in zip(*w):
        # every rank saw the same, global statistics ...
        assert m0["mean"] == pytest.approx(m1["mean"]) and m0["count"] == m1["count"]
        # ... equal to the single-process statistics of the same episodes
        # indices into the iteration's episodes of both ranks in rank order (global minibatches)
        both = eps[0] + eps[1]
        vals = [a for m in (m0, m1) for i in m["episodes"] for a in both[i]["advantages"]]
        assert not set(m0["episodes"]) & set(m1["episodes"])
        t = torch.tensor(vals, dtype=torch.float64)
        assert m0["count"] == len(vals)
        assert m0["mean"] == pytest.approx(float(t.mean()), abs=1e-6)
        assert m0["var"] == pytest.approx(float(t.var(unbiased=True)), rel=1e-5, abs=1e-9)
    rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[0]["episodes/count"] == 16
    assert (tmp_path / "run" / "checkpoints" / "iter_000001" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo"])
def test_group_method_trains_without_mc_rollouts_or_critic(algorithm, sft_gsm8k, tmp_path, monkeypatch):
    """GRPO / RLOO: two iterations in the shared loop and trainer, finite metrics, no MC
    rollouts (estimating MC values would fail the test), no critic, a loadable checkpoint."""
    import math

    from transformers import AutoModelForCausalLM

    import vineppo.loop

    def no_mc(*a, **k):
        raise AssertionError(f"{algorithm} must not run MC rollouts")
    monkeypatch.setattr(vineppo.loop, "estimate_mc_values", no_mc)
    model_dir, data_dir = sft_gsm8k
    cfg = tiny_cfg(model_dir, data_dir, algorithm)
    res = train(cfg, tmp_path / "run")
    rows = [json.loads(l) for l in open(res.run_dir / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
        assert not any(k.startswith("mc/") for k in r)
        assert "train/value_loss" not in r
        # 32 episodes, minibatch 16, 2 epochs: 4 optimizer steps per iteration, every action token twice
        assert r["train/optimizer_steps"] == 4 * r["iteration"]
        n_actions = r["episodes/count"] * (r["response/length_tokens"] + r["episodes/finished_frac"])
        assert r["train/tokens"] == pytest.approx(2 * n_actions)
    # compute accounting: cumulative, generated = the episodes' tokens only
    assert rows[1]["compute/generated_tokens"] == rows[0]["generate/tokens"] + rows[1]["generate/tokens"]
    assert rows[1]["compute/trained_tokens"] == rows[0]["train/tokens"] + rows[1]["train/tokens"]
    assert rows[1]["compute/wall_clock_seconds"] == pytest.approx(rows[0]["seconds"] + rows[1]["seconds"])
    ck = res.run_dir / "checkpoints" / "iter_000002"
    before, after = _weights(model_dir), _weights(ck)
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2
    AutoModelForCausalLM.from_pretrained(ck)


@pytest.mark.slow
def test_ppo_critic_warmup_moves_only_the_critic(sft_gsm8k, tmp_path):
    """`ppo.critic_warmup_iterations=1`: iteration 1 leaves the policy as it was (critic-only
    updates), iteration 2 moves it; the critic's fit to the returns is logged every iteration."""
    model_dir, data_dir = sft_gsm8k
    cfg = tiny_cfg(model_dir, data_dir, "ppo", "ppo.critic_warmup_iterations=1", "save_every=1")
    res = train(cfg, tmp_path / "run")
    rows = [json.loads(l) for l in open(res.run_dir / "metrics.jsonl")]
    assert [r["train/critic_only"] for r in rows] == [1.0, 0.0]
    assert rows[0]["train/optimizer_steps"] == 0 and rows[1]["train/optimizer_steps"] == 4
    for r in rows:
        assert r["critic/value_mae"] >= 0 and "train/value_loss" in r
    assert any("critic/explained_variance" in r for r in rows)
    start = _weights(model_dir)
    first = _weights(res.run_dir / "checkpoints" / "iter_000001")
    second = _weights(res.run_dir / "checkpoints" / "iter_000002")
    assert all(torch.equal(start[k], first[k]) for k in start)
    assert sum(not torch.equal(start[k], second[k]) for k in start) > len(start) // 2
