"""One interface suite, run against every Engine backend ("hf" always, "vllm" where installed).

References are plain transformers computations on the same tiny float32 model: `model.generate`
greedy, and log_softmax(logits / T) from a forward pass over prompt + sampled tokens.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vineppo.engine import SamplingParams, trim_at_stop
from vineppo.tokens import decode_response, encode_prompt


def read_jsonl(path, limit):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(limit), f)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_NEW = 24
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW)


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture(scope="module")
def prompts(shared_data_dir, tiny_tokenizer) -> list[list[int]]:
    rows = read_jsonl(shared_data_dir / "gsm8k" / "test.jsonl", 40)
    picked = [rows[0]["question"], rows[1]["question"][:40], "How many", rows[2]["question"],
              rows[3]["question"][:80], rows[39]["question"]]
    return [encode_prompt(tiny_tokenizer, t) for t in picked]


@pytest.fixture(scope="module")
def trained_model(shared_data_dir, tiny_hf_model, tiny_tokenizer):
    """The tiny model after one real AdamW step (lr 1e-2) on 8 GSM8K solutions."""
    rows = read_jsonl(shared_data_dir / "gsm8k" / "train.jsonl", 8)
    texts = [r["question"] + "\n" + r["answer"] for r in rows]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return trained_copy(tiny_hf_model, tiny_tokenizer, texts)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- references
@torch.no_grad()
def hf_greedy(model, tokenizer, prompt: list[int], max_new: int = MAX_NEW) -> tuple[list[int], str]:
    """transformers greedy decoding of one prompt: (ids without EOS, finish reason)."""
    x = torch.tensor([prompt])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    ids = out[0, len(prompt):].tolist()
    if tokenizer.eos_token_id in ids:
        return ids[:ids.index(tokenizer.eos_token_id)], "stop"
    return ids, "length"


@torch.no_grad()
def hf_logprobs(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    lp = torch.log_softmax(logits / temperature, dim=-1)
    return lp[torch.arange(len(response)), torch.tensor(response)]


def trained_copy(model, tokenizer, texts: list[str], lr: float = 1e-2):
    """`model` after one real AdamW step on the LM loss (a training step's worth of change)."""
    m = copy.deepcopy(model)
    m.train()
    m.requires_grad_(True)
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    loss.backward()
    opt.step()
    m.eval()
    m.requires_grad_(False)
    return m


def with_state(model, state):
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    return m


def ids_of(results):
    return [[c.token_ids for c in row] for row in results]


# ---------------------------------------------------------------- tests
def test_shapes_order_and_n(engine, prompts):
    sp = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=11)
    out = engine.generate(prompts, sp)
    assert len(out) == len(prompts)
    assert all(len(row) == 3 for row in out)
    # Order: the i-th row belongs to the i-th prompt (greedy, batch vs one at a time).
    batch = engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, batch):
        assert engine.generate([p], GREEDY)[0][0].token_ids == row[0].token_ids
    assert engine.generate([], GREEDY) == []


def test_greedy_equals_transformers(engine, prompts, tiny_hf_model, tiny_tokenizer):
    out = engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, out):
        ref_ids, ref_finish = hf_greedy(tiny_hf_model, tiny_tokenizer, p)
        c = row[0]
        assert c.token_ids == ref_ids
        assert c.finish_reason == ref_finish
        assert c.text == decode_response(tiny_tokenizer, c.token_ids)


def test_finish_length_at_max_new_tokens(engine, prompts, tiny_tokenizer):
    out = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=3))
    for row in out:
        c = row[0]
        assert tiny_tokenizer.eos_token_id not in c.token_ids
        if c.finish_reason == "length":
            assert len(c.token_ids) == 3
        else:  # EOS within 3 tokens
            assert len(c.token_ids) < 3


def test_finish_stop_at_eos(engine, prompts, tiny_hf_model, tiny_tokenizer):
    """Make EOS the greedy choice wherever the 3rd greedy token of prompt 0 would be chosen (its
    lm_head row scaled by 1.5 becomes EOS's row), push those weights, compare with transformers."""
    eos = tiny_tokenizer.eos_token_id
    base_ids, _ = hf_greedy(tiny_hf_model, tiny_tokenizer, prompts[0], 8)
    assert len(base_ids) >= 3
    state = {k: v.clone() for k, v in tiny_hf_model.state_dict().items()}
    state["lm_head.weight"][eos] = 1.5 * state["lm_head.weight"][base_ids[2]]
    ref_model = with_state(tiny_hf_model, state)
    engine.update_weights(state)
    out = engine.generate(prompts, GREEDY)
    c0 = out[0][0]
    assert c0.finish_reason == "stop" and len(c0.token_ids) <= 2
    for p, row in zip(prompts, out):
        ref_ids, ref_finish = hf_greedy(ref_model, tiny_tokenizer, p)
        assert row[0].token_ids == ref_ids
        assert row[0].finish_reason == ref_finish
        assert eos not in row[0].token_ids
        assert row[0].text == decode_response(tiny_tokenizer, row[0].token_ids)
        # the token that ended it is reported (episodes train it as the EOS); none at the length limit
        assert row[0].stop_token_id == (eos if ref_finish == "stop" else None)


def _pick_stop(text: str) -> tuple[int, str] | None:
    for pos in range(3, len(text) - 2):
        s = text[pos:pos + 2]
        if s.isascii() and s.isprintable() and s.strip() and text.find(s) == pos:
            return pos, s
    return None


def test_stop_string(engine, prompts, tiny_tokenizer):
    decode = lambda ids: decode_response(tiny_tokenizer, ids)  # noqa: E731
    full = engine.generate(prompts, GREEDY)
    checked = 0
    for p, row in zip(prompts, full):
        c = row[0]
        pick = _pick_stop(c.text)
        if c.finish_reason != "length" or pick is None:
            continue
        pos, stop = pick
        got = engine.generate([p], SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW, stop=(stop,)))[0][0]
        assert got.finish_reason == "stop" and got.stop_token_id is None  # a string, not a token, ended it
        assert got.text == c.text[:pos]  # cut just before the stop string
        want_ids, want_text, stopped = trim_at_stop(c.token_ids, decode, (stop,))
        assert stopped and want_text == got.text
        assert got.token_ids == want_ids  # tokens starting inside the stop string are dropped
        assert decode(got.token_ids)[:len(got.text)] == got.text
        # A stop string that never occurs changes nothing.
        same = engine.generate([p], SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW, stop=("@@@@",)))[0][0]
        assert same.token_ids == c.token_ids and same.finish_reason == "length"
        checked += 1
    assert checked >= 2


def test_text_is_decode_response_and_no_eos(engine, prompts, tiny_tokenizer):
    out = engine.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=3))
    for row in out:
        for c in row:
            assert tiny_tokenizer.eos_token_id not in c.token_ids
            assert c.text == decode_response(tiny_tokenizer, c.token_ids)
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert len(c.token_ids) == 16
            assert c.logprobs is None


def test_seeded_sampling_reproducible(engine, prompts):
    sp = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=123)
    a = ids_of(engine.generate(prompts, sp))
    b = ids_of(engine.generate(prompts, sp))
    assert a == b
    c = ids_of(engine.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=124)))
    assert c != a
    assert any(len({tuple(x) for x in row}) > 1 for row in a)  # the n samples differ


def test_update_weights_after_training_step(engine, prompts, tiny_tokenizer, trained_model):
    before = ids_of(engine.generate(prompts, GREEDY))
    trained = trained_model
    engine.update_weights(trained.state_dict())
    after = engine.generate(prompts, GREEDY)
    assert ids_of(after) != before  # the push changed the engine's weights
    for p, row in zip(prompts, after):
        ref_ids, ref_finish = hf_greedy(trained, tiny_tokenizer, p)
        assert row[0].token_ids == ref_ids
        assert row[0].finish_reason == ref_finish


def test_update_weights_rejects_bad_state_dict(engine, prompts, tiny_hf_model, tiny_tokenizer, trained_model):
    trained = trained_model.state_dict()
    bad_name = dict(trained)
    bad_name["model.layers.0.mlp.not_a_weight"] = torch.zeros(3)
    missing = dict(trained)
    missing.pop("model.layers.1.self_attn.q_proj.weight")
    bad_shape = dict(trained)
    bad_shape["model.layers.2.mlp.up_proj.weight"] = bad_shape["model.layers.2.mlp.up_proj.weight"][:-1]
    with pytest.raises(KeyError):
        engine.update_weights(bad_name)
    with pytest.raises(KeyError):
        engine.update_weights(missing)
    with pytest.raises(ValueError):
        engine.update_weights(bad_shape)
    # Nothing was pushed: still the original model, and the engine still works.
    out = engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, out):
        assert row[0].token_ids == hf_greedy(tiny_hf_model, tiny_tokenizer, p)[0]


def test_streamed_update_equals_the_dict(engine, prompts, tiny_tokenizer, trained_model):
    """The trainer's push: (name, tensor) pairs from a generator, loaded as they arrive (no full
    copy held); the engine then runs exactly those weights."""
    engine.update_weights((k, v) for k, v in trained_model.state_dict().items())
    for p, row in zip(prompts, engine.generate(prompts, GREEDY)):
        assert row[0].token_ids == hf_greedy(trained_model, tiny_tokenizer, p)[0]


def test_streamed_update_names_a_missing_or_unknown_weight(hf_engine, trained_model):
    """A stream that lacks a weight or brings an unknown one is an error naming it (the engine's
    weights are then undefined and the run stops; vLLM's side: test_vllm_logprobs' fake engine)."""
    trained = trained_model.state_dict()
    lacking = "model.layers.1.self_attn.q_proj.weight"
    with pytest.raises(KeyError, match="lack"):
        hf_engine.update_weights((k, v) for k, v in trained.items() if k != lacking)
    with pytest.raises(KeyError, match="not_a_weight"):
        hf_engine.update_weights(iter([("model.layers.0.mlp.not_a_weight", torch.zeros(3))]))
    with pytest.raises(ValueError, match="shape"):
        hf_engine.update_weights(iter([(lacking, trained[lacking][:-1])]))


def test_sleep_wake_keeps_weights_and_takes_updates(engine, prompts, tiny_hf_model, tiny_tokenizer, trained_model):
    engine.sleep()
    engine.wake()
    out = engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, out):
        assert row[0].token_ids == hf_greedy(tiny_hf_model, tiny_tokenizer, p)[0]
    # The training-loop order: sleep -> train -> update_weights -> wake -> generate.
    trained = trained_model
    engine.sleep()
    engine.update_weights(trained.state_dict())
    engine.wake()
    out = engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, out):
        assert row[0].token_ids == hf_greedy(trained, tiny_tokenizer, p)[0]


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_logprobs_match_transformers(engine, prompts, tiny_hf_model, top_p):
    """Sampled-token log-probs = log_softmax(logits / T) over the full vocabulary (no top-p
    renormalisation), the trainer's definition; float32 tolerance 1e-4."""
    temperature = 0.7
    sp = SamplingParams(n=2, temperature=temperature, top_p=top_p, max_new_tokens=10, seed=5, logprobs=True)
    out = engine.generate(prompts, sp)
    worst = 0.0
    for p, row in zip(prompts, out):
        for c in row:
            assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
            if not c.token_ids:
                continue
            ref = hf_logprobs(tiny_hf_model, p, c.token_ids, temperature)
            worst = max(worst, (ref - torch.tensor(c.logprobs)).abs().max().item())
    assert worst < 1e-4


# ---------------------------------------------------------------- the factory's transformers engine
def test_factory_hf_engine_dtype_and_device(tiny_hf_model, tiny_tokenizer):
    """`engine.dtype` sets the transformers engine's dtype (the paper configs' bf16 engine); "auto"
    keeps the copied policy's; the engine generates where it is told (the trainer's device)."""
    from vineppo.config import EngineConfig
    from vineppo.engine.factory import hf_engine_dtype, make_engine

    bf16 = make_engine(EngineConfig(backend="hf", dtype="bfloat16"), model_path="", tokenizer=tiny_tokenizer,
                       model=tiny_hf_model, progress=False, device="cpu")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert bf16.device == torch.device("cpu")
    assert next(tiny_hf_model.parameters()).dtype == torch.float32  # the engine owns a copy
    auto = make_engine(EngineConfig(backend="hf"), model_path="", tokenizer=tiny_tokenizer, model=tiny_hf_model,
                       progress=False)
    assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
    assert hf_engine_dtype("half") == torch.float16 and hf_engine_dtype("auto") is None
    with pytest.raises(ValueError, match="engine.dtype 'int8'"):
        hf_engine_dtype("int8")


def test_factory_hf_engine_from_a_checkpoint_honours_the_dtype(tiny_model_dir, tiny_tokenizer):
    from vineppo.config import EngineConfig
    from vineppo.engine.factory import make_engine

    engine = make_engine(EngineConfig(backend="hf", dtype="bfloat16"), model_path=str(tiny_model_dir),
                         tokenizer=tiny_tokenizer, progress=False)
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
