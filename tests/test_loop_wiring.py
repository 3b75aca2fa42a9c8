"""The training loop's wiring, observed where it matters, on a tiny random-init model with the
transformers engine (a few seconds per run): the seed each phase hands the engine (recorded at the
engine), `engine.shared_request_seed`, the cumulative `compute/*` counters across `--resume`, and
tensorboard logging written and readable."""

from __future__ import annotations

import json

import pytest

from vineppo.config import load_config
from vineppo.mc import round_seed
from vineppo.seeds import derive_seed

SEED = 2746318213


class RecordingEngine:
    """Wraps the real engine and records `(desc, sampling.seed, shared_request_seed)` of every call."""

    def __init__(self, inner, calls):
        self._inner, self.calls = inner, calls

    def generate(self, prompts, sampling, desc=None):
        self.calls.append((desc, sampling.seed, self._inner.shared_request_seed))
        return self._inner.generate(prompts, sampling, desc=desc)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        if name in ("_inner", "calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


@pytest.fixture
def recorded_calls(monkeypatch):
    import vineppo.engine.factory as factory

    calls: list = []
    real = factory.make_engine
    monkeypatch.setattr(factory, "make_engine", lambda *a, **kw: RecordingEngine(real(*a, **kw), calls))
    return calls


def tiny_run_config(model_dir, data_dir, *extra):
    return load_config(None, [
        "algorithm=vineppo", f"seed={SEED}", f"model.name_or_path={model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "data.task=gsm8k", f"data.source={data_dir / 'gsm8k'}",
        "data.max_train_rows=40", "episodes.questions_per_iteration=2", "episodes.samples_per_question=2",
        "ppo.minibatch_size=4", "ppo.micro_batch_size=2", "ppo.epochs=1", "sampling.max_new_tokens=6",
        "mc.k=2", "probe.every=2", "probe.states=2", "probe.k=2", "engine.backend=hf", "iterations=2",
        "save_every=1", "logging.progress=false", *extra])


def rows_of(run_dir):
    return [json.loads(l) for l in open(run_dir / "metrics.jsonl")]


def test_each_phase_hands_the_engine_its_own_seed(tiny_model_dir, shared_data_dir, tmp_path, recorded_calls,
                                                  one_torch_thread):
    from vineppo.loop import train

    train(tiny_run_config(tiny_model_dir, shared_data_dir), tmp_path / "run")
    want = [("episodes: generate", derive_seed(SEED, 0, 0, "episodes")), ("mc: rollouts", derive_seed(SEED, 0, 0, "mc")),
            ("episodes: generate", derive_seed(SEED, 0, 1, "episodes")), ("mc: rollouts", derive_seed(SEED, 0, 1, "mc")),
            ("probe: rollouts", derive_seed(SEED, 0, 1, "probe"))]
    # then the ranking of alternative steps: sampling them, and valuing them where a state had enough
    probe_seed = derive_seed(SEED, 0, 1, "probe")
    want += [("probe: alternative steps", round_seed(probe_seed, 1)),
             ("probe: alternative rollouts", round_seed(probe_seed, 2))][: len(recorded_calls) - len(want)]
    assert [(d, s) for d, s, _ in recorded_calls] == want and len(want) >= 6
    assert len({s for _, s in want}) == len(want) and not any(shared for *_, shared in recorded_calls)


def test_shared_request_seed_hands_the_engine_the_official_seeds(tiny_model_dir, shared_data_dir, tmp_path,
                                                                 recorded_calls, one_torch_thread):
    from vineppo.loop import train

    train(tiny_run_config(tiny_model_dir, shared_data_dir, "engine.shared_request_seed=true", "iterations=1",
                          "probe.every=0"), tmp_path / "run")
    # the official code: seed + 100·rank + iteration for the episodes, + 1 for the MC rollouts
    assert recorded_calls == [("episodes: generate", SEED, True), ("mc: rollouts", SEED + 1, True)]


def test_compute_counters_continue_across_resume(tiny_model_dir, shared_data_dir, tmp_path, one_torch_thread):
    from vineppo.loop import train

    run = tmp_path / "run"
    train(tiny_run_config(tiny_model_dir, shared_data_dir, "iterations=1", "probe.every=0",
                          "logging.tensorboard=true"), run)
    train(tiny_run_config(tiny_model_dir, shared_data_dir, "iterations=2", "probe.every=0",
                          "logging.tensorboard=true"), run, resume=True)
    first, second = rows_of(run)
    assert [first["iteration"], second["iteration"]] == [1, 2]
    for row in (first, second):
        assert row["generate/tokens"] > 0 and row["mc/tokens"] > 0 and row["train/tokens"] > 0
    assert first["compute/generated_tokens"] == first["generate/tokens"] + first["mc/tokens"]
    assert second["compute/generated_tokens"] == (first["compute/generated_tokens"]
                                                  + second["generate/tokens"] + second["mc/tokens"])
    assert second["compute/trained_tokens"] == first["train/tokens"] + second["train/tokens"]
    assert second["compute/wall_clock_seconds"] == pytest.approx(first["seconds"] + second["seconds"])

    # tensorboard: both runs' scalars, readable, equal to metrics.jsonl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for f in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f))
        ea.Reload()
        for e in ea.Scalars("compute/generated_tokens"):
            values[e.step] = e.value
    assert values == {1: pytest.approx(first["compute/generated_tokens"]),
                      2: pytest.approx(second["compute/generated_tokens"])}


def test_hf_engine_shared_request_seed_gives_every_request_the_same_stream(hf_engine, tiny_tokenizer,
                                                                           one_torch_thread):
    from vineppo.engine.base import SamplingParams
    from vineppo.tokens import encode_prompt

    prompt = encode_prompt(tiny_tokenizer, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5)
    before = (hf_engine.shared_request_seed, hf_engine.max_batch_size)
    try:
        hf_engine.max_batch_size = 1  # one request per batch: each batch is seeded on its own
        hf_engine.shared_request_seed = False
        own = [o[0].token_ids for o in hf_engine.generate([prompt, prompt, prompt], params)]
        hf_engine.shared_request_seed = True
        shared = [o[0].token_ids for o in hf_engine.generate([prompt, prompt, prompt], params)]
    finally:
        hf_engine.shared_request_seed, hf_engine.max_batch_size = before
    assert shared[0] == shared[1] == shared[2]  # common random numbers, as the official code
    assert len({tuple(t) for t in own}) > 1     # a stream per request


@pytest.mark.parametrize("algorithm", ["vineppo", "dr_grpo"])
def test_math_end_to_end(algorithm, tiny_model_dir, shared_data_dir, tmp_path, one_torch_thread):
    """One MATH iteration through the whole loop (MATH prompts, the in-place step splitter, the
    MATH grader), VinePPO and Dr. GRPO: the logged counts agree with the dumped episodes."""
    from vineppo.loop import train

    cfg = tiny_run_config(tiny_model_dir, shared_data_dir, f"algorithm={algorithm}", "data.task=math",
                          f"data.source={shared_data_dir / 'math'}", "iterations=1", "probe.every=0",
                          "logging.dump_episodes=true", "data.max_prompt_tokens=400")
    run = tmp_path / "run"
    train(cfg, run)
    (row,) = rows_of(run)
    eps = [json.loads(l) for l in open(run / "episodes" / "iter_000001.rank0.jsonl")]
    assert row["episodes/count"] == len(eps) == 4
    assert len({e["question_index"] for e in eps}) == 2
    n_actions = sum(len(e["response_ids"]) + e["finished"] for e in eps)
    assert row["train/tokens"] == n_actions and row["train/optimizer_steps"] == 1
    assert row["logprobs/tokens"] == n_actions  # one log-prob pass over every action token
    for e in eps:
        assert len(e["advantages"]) == len(e["response_ids"]) + e["finished"]
        assert e["step_boundaries"][0] == 0 and e["step_boundaries"][-1] == len(e["response"])
    if algorithm == "vineppo":
        assert row["mc/states"] == sum(len(e["step_mc_rollouts"]) for e in eps)
        assert row["mc/rollouts"] == 2 * row["mc/unique_states"]  # mc.k = 2
    else:
        assert not any(k.startswith("mc/") for k in row)
        for q in {e["question_index"] for e in eps}:  # Dr. GRPO: r − mean of the group, no std
            group = [e for e in eps if e["question_index"] == q]
            mean = sum(e["reward"] for e in group) / len(group)
            for e in group:
                assert e["step_advantages"] == pytest.approx([e["reward"] - mean] * len(e["step_advantages"]))


@pytest.mark.vllm
def test_vllm_shared_request_seed_is_one_seed_for_every_request():
    """vLLM on a GPU: per-request seeds spaced by n, or (`shared_request_seed`) the phase's seed for
    every request. The parameters only (no engine is started); CPU vLLM takes the engine seed."""
    from vineppo.engine.base import SamplingParams
    from vineppo.engine.vllm import VLLMEngine

    eng = VLLMEngine.__new__(VLLMEngine)  # the parameter builder needs no running engine
    eng.is_cpu, eng.stop_token_ids = False, {2}
    params = SamplingParams(n=3, temperature=0.6, top_p=0.9, max_new_tokens=8, seed=123)
    eng.shared_request_seed = False
    own = eng._vllm_params(params, 2)
    assert len(own) == 2 and own[1].seed - own[0].seed == 3
    eng.shared_request_seed = True
    shared = eng._vllm_params(params, 2)
    assert not isinstance(shared, list) and shared.seed == 123 and shared.n == 3
    eng.is_cpu = True
    assert eng._vllm_params(params, 2).seed is None
