"""Distribution strategies (vineppo/distributed.py), rehearsed on CPU with launch/cpu/*.yaml.

The slow tests run launch/README.md's CPU rehearsal commands at a smaller scale: for each of ddp, fsdp,
zero2, zero3, PPO trains 1 iteration in 2 gloo processes, then resumes to iteration 2; metrics
have one row per iteration, the engine holds the trainer's weights after the resume (sync gap and
greedy agreement with the gathered weights), the critic trains, and the policy's first update
matches the DDP run's. VinePPO is exercised under FSDP and ZeRO-3 the same way, and so is LoRA
(gathered merge, adapter-only folder). A 2-process ZeRO-3 probe (tests/scripts/zero_timeout_probe.py)
shows a late rank stopped after `distributed.timeout_minutes`, DeepSpeed's own group included.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["ddp", "fsdp", "zero2", "zero3"]


# ---- fast unit tests -------------------------------------------------------------------------
@pytest.mark.parametrize("env,expected", [
    ({}, "single"),
    ({"WORLD_SIZE": "2"}, "ddp"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "fsdp"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, "zero2"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "zero3"),
])
def test_launch_strategy_from_accelerate_env(monkeypatch, env, expected):
    from vineppo.distributed import launch_strategy

    for k in ("WORLD_SIZE", "ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED",
              "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launch_strategy() == expected


@pytest.mark.parametrize("env,msg", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, "stage 1"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "ds.json"}, "deepspeed_config_file"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"},
     "fsdp_cpu_ram_efficient_loading"),
])
def test_unsupported_launch_settings_are_rejected(monkeypatch, env, msg):
    from vineppo.distributed import StrategyError, launch_strategy

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(StrategyError, match=msg):
        launch_strategy()


def test_resume_with_other_process_count_is_a_clear_error(tmp_path):
    from types import SimpleNamespace

    from vineppo.distributed import AccelerateStrategy, StrategyError

    (tmp_path / "strategy.json").write_text(json.dumps({"strategy": "zero2", "processes": 4}))
    acc = SimpleNamespace(num_processes=2)
    with pytest.raises(StrategyError, match="saved by 4 processes"):
        AccelerateStrategy(acc, None, "zero2")._check_info(tmp_path)
    acc.num_processes = 4
    with pytest.raises(StrategyError, match="same strategy"):
        AccelerateStrategy(acc, None, "fsdp")._check_info(tmp_path)
    AccelerateStrategy(acc, None, "zero2")._check_info(tmp_path)  # same: fine


def test_gpu_readiness_validation(tmp_path):
    from vineppo.config import ConfigError, load_config

    base = ["model.name_or_path=x"]
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        load_config(None, base + ["engine.tensor_parallel_size=2"])
    with pytest.raises(ConfigError, match="timeout_minutes"):
        load_config(None, base + ["distributed.timeout_minutes=0"])
    cfg = load_config(None, base + ["engine.sleep_level=2", "checkpoint.keep_trainer_state=2"])
    assert cfg.distributed.timeout_minutes == 120 and cfg.engine.sleep_level == 2
    with pytest.raises(ConfigError):
        load_config(None, base + ["engine.sleep_level=3"])


def test_flash_attention_falls_back_to_sdpa(caplog):
    import importlib.util

    from vineppo.trainer import resolve_attn_implementation

    assert resolve_attn_implementation(None) is None and resolve_attn_implementation("sdpa") == "sdpa"
    if importlib.util.find_spec("flash_attn") is None:
        assert resolve_attn_implementation("flash_attention_2") == "sdpa"
        assert "flash-attn" in caplog.text


def test_chunked_logprobs_equal_the_full_log_softmax():
    import torch

    from vineppo.losses import logprobs_from_logits

    torch.manual_seed(0)
    x = torch.randn(2, 300, 40, requires_grad=True)
    y = torch.randint(0, 40, (2, 300))
    full = torch.gather(torch.log_softmax(x.float() / 0.6, -1), -1, y.unsqueeze(-1)).squeeze(-1)
    chunked = logprobs_from_logits(x, y, 0.6, chunk_size=64)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    g1, = torch.autograd.grad(chunked.sum(), x)
    g2, = torch.autograd.grad(full.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(logprobs_from_logits(x, y, 0.6, chunk_size=64), full.detach(), rtol=0, atol=1e-6)


def test_overrides_and_options_in_any_order():
    from vineppo.cli import build_parser, parse_args

    p = build_parser()
    a = parse_args(p, ["train", "--config", "c.yaml", "a=1", "--resume", "b=2", "--output-dir", "d", "c.d=3"])
    assert a.overrides == ["a=1", "b=2", "c.d=3"] and a.resume and a.output_dir == "d"
    with pytest.raises(SystemExit):
        parse_args(p, ["train", "--config", "c.yaml", "--output-dir", "d", "--bogus"])


def test_keep_trainer_state_prunes_old_optimizer_states(tmp_path):
    from vineppo import checkpoint as ckpt

    for it in (1, 2, 3):
        d = tmp_path / "checkpoints" / ckpt.checkpoint_name(it)
        (d / "trainer_state").mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"w" * 10)
        (d / "trainer_state" / "optimizer.bin").write_bytes(b"o" * 100)
        ckpt.write_manifest(d, it)
    pruned = ckpt.prune_trainer_states(tmp_path, keep=1)
    assert [p.name for p in pruned] == ["iter_000001", "iter_000002"]
    for it in (1, 2):
        d = tmp_path / "checkpoints" / ckpt.checkpoint_name(it)
        assert not (d / "trainer_state").exists() and (d / "model.safetensors").is_file()
        assert ckpt.verify_checkpoint(d)[0]  # still a valid (weights-only) checkpoint for evaluation
    assert ckpt.latest_checkpoint(tmp_path, need_trainer_state=True)[1] == 3
    # the newest one loses its state (e.g. a crash) -> resume falls back to... nothing older with state
    import shutil
    shutil.rmtree(tmp_path / "checkpoints" / "iter_000003" / "trainer_state")
    ckpt.prune_trainer_states(tmp_path, keep=1)
    assert ckpt.latest_checkpoint(tmp_path, need_trainer_state=True) is None
    assert ckpt.latest_checkpoint(tmp_path)[1] == 2  # weights-only checkpoints still list for eval


def test_every_cpu_launch_file_matches_its_gpu_strategy():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
    assert sorted(p.stem for p in (REPO / "launch" / "cpu").glob("*.yaml")) == sorted(expected)
    for name, dist in expected.items():
        cfg = load_config_from_file(str(REPO / "launch" / "cpu" / f"{name}.yaml"))
        assert cfg.distributed_type.value == dist and cfg.num_processes == 2 and cfg.num_machines == 1
        if name == "fsdp":
            assert str(cfg.fsdp_config["fsdp_version"]) == "2"
        if name.startswith("zero"):
            assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    gpu = load_config_from_file(str(REPO / "launch" / "fsdp_8gpu.yaml"))
    assert str(gpu.fsdp_config["fsdp_version"]) == "2"


def test_greedy_match_detects_an_engine_out_of_sync(tiny_model_dir, tiny_tokenizer, one_torch_thread):
    import torch
    from transformers import AutoModelForCausalLM

    from vineppo.engine.hf import HFEngine
    from vineppo.loop import greedy_match

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    engine = HFEngine(model, tiny_tokenizer, progress=False)
    prompts = [tiny_tokenizer("Tom has 3 apples and buys 4 more.")["input_ids"], tiny_tokenizer("Ann")["input_ids"]]
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert greedy_match(engine, sd, model.config, prompts) == 1.0
    torch.manual_seed(0)
    other = {k: v + 0.5 * torch.randn_like(v) for k, v in sd.items()}
    assert greedy_match(engine, other, model.config, prompts) < 1.0  # the engine kept the old weights


# ---- the strategies, end to end (2 CPU processes each) -----------------------------------------
def _deepspeed_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def _launch(strategy: str, config: str, out: Path, model_dir: Path, *extra: str) -> None:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(REPO / "launch" / "cpu" / f"{strategy}.yaml"),
           "--main_process_port", str(free_port()),
           "-m", "vineppo", "train", "--config", str(REPO / "configs" / "tiny" / config), "--output-dir", str(out),
           f"model.name_or_path={model_dir}", "episodes.questions_per_iteration=4", "sampling.max_new_tokens=32",
           "mc.k=2", "iterations=1", "save_every=1", "logging.progress=false", "logging.check_sync_greedy=true",
           *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{strategy} {' '.join(extra)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _first_update(run: Path, model_dir: Path):
    import torch
    from safetensors.torch import load_file

    w0 = load_file(str(model_dir / "model.safetensors"))
    w1 = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    assert sorted(w0) == sorted(w1)
    return torch.cat([(w1[k].double() - w0[k].double()).flatten() for k in sorted(w0)])


@pytest.fixture(scope="module")
def dist_model(tmp_path_factory, shared_data_dir):
    """The tiny model every strategy starts from (built once by the first run: model.tiny_init)."""
    return tmp_path_factory.mktemp("dist_model") / "tiny-gsm8k"


_RUNS: dict[tuple[str, str], Path] = {}


#: ZeRO checkpoints are the big ones: this run also keeps the optimizer state of the last one only
EXTRA = {"zero2": ("checkpoint.keep_trainer_state=1",)}


def _train_and_resume(strategy: str, config: str, model_dir: Path, root: Path, resume: bool = True,
                      *extra: str) -> Path:
    """1 iteration, then `--resume iterations=2` (or, with resume=False, 2 iterations in one go)."""
    key = (strategy, config)
    if key not in _RUNS:
        out = root / f"{Path(config).stem}_{strategy}"
        if resume:
            _launch(strategy, config, out, model_dir, *EXTRA.get(strategy, ()))
            _launch(strategy, config, out, model_dir, "--resume", "iterations=2", *EXTRA.get(strategy, ()))
        else:
            _launch(strategy, config, out, model_dir, "iterations=2", *extra)
        _RUNS[key] = out
    return _RUNS[key]


def _check_run(out: Path, ppo: bool, greedy: bool = True) -> list[dict]:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        # the engine runs exactly the weights gathered from the trainer (after the resume too)
        assert r["sync/logprob_gap"] <= 1e-3, r["sync/logprob_gap"]
        assert r["sync/greedy_match"] == 1.0 if greedy else "sync/greedy_match" not in r
    if ppo:
        value = [v for r in rows for k, v in r.items() if k.startswith("train/value")]
        assert value and all(math.isfinite(v) for v in value)
        assert all(math.isfinite(r["train/value_grad_norm"]) for r in rows)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["iter_000001", "iter_000002"]
    return rows


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ppo_strategy_trains_resumes_and_matches_ddp(strategy, dist_model, tmp_path_factory):
    if strategy.startswith("zero") and not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]', see README Install)")
    root = tmp_path_factory.getbasetemp() / "dist_runs"
    ref = _train_and_resume("ddp", "gsm8k_ppo.yaml", dist_model, root)
    out = _train_and_resume(strategy, "gsm8k_ppo.yaml", dist_model, root)
    _check_run(out, ppo=True)
    import torch

    d, d_ref = _first_update(out, dist_model), _first_update(ref, dist_model)
    assert d_ref.norm() > 0
    cos = float(torch.nn.functional.cosine_similarity(d, d_ref, dim=0))
    ratio = float(d.norm() / d_ref.norm())
    assert cos >= 0.999 and 0.98 <= ratio <= 1.02, (strategy, cos, ratio)
    if strategy in EXTRA:  # checkpoint.keep_trainer_state=1: iteration 1 keeps its weights only
        from vineppo import checkpoint as ckpt

        first, last = out / "checkpoints" / "iter_000001", out / "checkpoints" / "iter_000002"
        assert not (first / "trainer_state").exists() and ckpt.verify_checkpoint(first)[0]
        assert ckpt.has_trainer_state(last)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_vineppo_strategy_trains(strategy, dist_model, tmp_path_factory):
    """VinePPO under the sharded strategies: 2 iterations in one run (resuming under each strategy
    is the PPO test's job; it shares the trainer-state code), weights in sync after each push."""
    if strategy.startswith("zero") and not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]', see README Install)")
    root = tmp_path_factory.getbasetemp() / "dist_runs"
    # without the greedy check, the push streams the gathered tensors (nothing kept): the canary
    # alone says the engine holds the trainer's weights
    out = _train_and_resume(strategy, "gsm8k_vineppo.yaml", dist_model, root, False, "logging.check_sync_greedy=false")
    rows = _check_run(out, ppo=False, greedy=False)
    assert all(r["mc/rollouts"] > 0 for r in rows)


# ---- collective timeouts -------------------------------------------------------------------
def test_collective_timeout_is_named_after_its_setting():
    from types import SimpleNamespace

    from vineppo.distributed import CollectiveTimeout, collective_timeout, name_timeout_setting

    cfg = SimpleNamespace(distributed=SimpleNamespace(timeout_minutes=0.05))
    assert collective_timeout(cfg).total_seconds() == pytest.approx(3.0)
    gloo = "[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 3000ms for recv operation to complete"
    with pytest.raises(CollectiveTimeout, match=r"distributed\.timeout_minutes=0\.05") as info:
        with name_timeout_setting(cfg):
            raise RuntimeError(gloo)
    assert "Timed out waiting 3000ms" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)
    for other in ("shape mismatch", "vLLM engine core timeout"):  # other errors pass through unchanged
        with pytest.raises(RuntimeError, match=f"^{other}$"):
            with name_timeout_setting(cfg):
                raise RuntimeError(other)
    with pytest.raises(CollectiveTimeout, match="timeout_minutes=0.05"):
        with name_timeout_setting(cfg):
            raise RuntimeError("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLGATHER)")


def test_zero_on_a_group_vineppo_did_not_time_is_refused(monkeypatch):
    if not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed")
    from types import SimpleNamespace

    from deepspeed.utils import groups

    from vineppo.distributed import DeepSpeedStrategy, StrategyError

    ours, other = object(), object()
    monkeypatch.setattr(groups, "_WORLD_GROUP", ours)
    strategy = DeepSpeedStrategy(SimpleNamespace(num_processes=2), None, "zero3")
    strategy._check_timed_group(SimpleNamespace(seq_data_parallel_group=ours))  # the pinned group: fine
    with pytest.raises(StrategyError, match="distributed.timeout_minutes would not apply"):
        strategy._check_timed_group(SimpleNamespace(seq_data_parallel_group=other))


def test_timeout_minutes_takes_fractions():
    from vineppo.config import load_config

    cfg = load_config(None, ["model.name_or_path=x", "distributed.timeout_minutes=0.05"])
    assert cfg.distributed.timeout_minutes == 0.05


@pytest.mark.slow
def test_zero3_collective_of_a_late_rank_times_out_at_the_configured_timeout():
    """Under launch/cpu/zero3.yaml rank 1 joins a collective on the ZeRO-3 optimizer's process group
    (DeepSpeed's own copy of the world group: gradient reductions, overflow checks, norms) 40 s late;
    distributed.timeout_minutes=0.05 (3 s) must stop rank 0 after 3 s with an error naming the
    setting, not after torch's default for that group (gloo 30 min: the probe would then wait the
    40 s and succeed; NCCL's 10 min killed 7B VinePPO runs)."""
    if not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]', see README Install)")
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(REPO / "launch" / "cpu" / "zero3.yaml"),
           "--main_process_port", str(free_port()), str(REPO / "tests" / "scripts" / "zero_timeout_probe.py"),
           "--timeout-minutes", "0.05", "--delay", "40"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("probe:")]
    assert len(lines) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    import re

    m = re.match(r"probe: in-sync forward \S+; CollectiveTimeout after ([\d.]+) s: (.*)", lines[0])
    assert m, lines[0]
    waited = float(m.group(1))
    assert 2.5 <= waited <= 20, waited  # the 3 s of the setting, far from the 40 s delay
    assert "distributed.timeout_minutes=0.05" in m.group(2)
    assert proc.returncode != 0


# ---- LoRA under the sharded strategies ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_lora_trains_under_sharded_strategies(strategy, dist_model, tmp_path_factory):
    """LoRA PPO (the critic makes the advantages non-zero, so the adapter moves) for 2 iterations
    under launch/cpu/{fsdp,zero3}.yaml: the merged push is gathered from the sharded base weights
    and adapter matrices, the engine holds exactly those weights after each push (gap, greedy
    agreement), and the saved HF weights differ from the start only in the adapted projections."""
    if strategy.startswith("zero") and not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]', see README Install)")
    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.getbasetemp() / "dist_runs" / f"lora_{strategy}"
    _launch(strategy, "gsm8k_ppo.yaml", out, dist_model, "iterations=2", "model.lora.r=4", "optim.lr=1e-3")
    _check_run(out, ppo=True)
    w0 = load_file(str(dist_model / "model.safetensors"))
    w2 = load_file(str(out / "checkpoints" / "iter_000002" / "model.safetensors"))
    assert sorted(w0) == sorted(w2)
    adapted = ("q_proj", "k_proj", "v_proj", "o_proj")  # model.lora.target_modules' default
    changed = {k for k in w0 if not torch.equal(w0[k], w2[k])}
    assert changed and all(k.split(".")[-2] in adapted for k in changed), sorted(changed)[:8]
    # the adapter alone, gathered from both ranks: base + its merge gives the saved weights
    adapter = load_file(str(out / "checkpoints" / "iter_000002" / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)


# ---- LoRA adapter sync under several processes ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_adapter_sync_reaches_every_ranks_engine(strategy, dist_model, tmp_path_factory):
    """`model.lora.sync=adapter` in 2 processes: every rank's vLLM engine serves the adapter its
    trainer holds (each rank writes the gathered adapter into a directory of its own), 2 PPO
    iterations (the critic's advantages move the adapter), the engine in step after each push."""
    out = tmp_path_factory.getbasetemp() / "dist_runs" / f"lora_adapter_{strategy}"
    _launch(strategy, "gsm8k_ppo.yaml", out, dist_model, "iterations=2", "model.lora.r=8",
            "model.lora.sync=adapter", "engine.backend=vllm", "optim.lr=1e-3")
    _check_run(out, ppo=True)
