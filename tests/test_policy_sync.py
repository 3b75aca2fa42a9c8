"""PolicySync.push, the merged path: the trainer's weights reach the engine as a stream of
(name, tensor) pairs in the engine's dtype; only the greedy check (`keep`) collects a dict."""
import types

import torch

from vineppo.lora_sync import PolicySync


class _Trainer:
    def __init__(self):
        self.asked = []
        self.state = {"a": torch.ones(2), "b": torch.zeros(3)}

    def policy_state_items(self, dtype=None):
        self.asked.append(dtype)
        return ((k, v.to(dtype or v.dtype)) for k, v in self.state.items())


class _Engine:
    dtype = torch.bfloat16

    def __init__(self):
        self.pushed = []

    def update_weights(self, weights):
        self.pushed.append(weights if isinstance(weights, dict) else list(weights))


def test_push_streams_the_policy_in_the_engines_dtype():
    trainer, engine = _Trainer(), _Engine()
    assert PolicySync(adapter=False).push(engine, trainer) is None
    assert trainer.asked == [torch.bfloat16]
    (got,) = engine.pushed
    assert isinstance(got, list) and [k for k, _ in got] == ["a", "b"]  # a stream, not a dict
    assert all(v.dtype == torch.bfloat16 for _, v in got)
    assert torch.equal(got[0][1].float(), trainer.state["a"])


def test_push_keeps_the_dict_for_the_greedy_check():
    trainer, engine = _Trainer(), _Engine()
    kept = PolicySync(adapter=False).push(engine, trainer, keep=True)
    assert sorted(kept) == ["a", "b"] and engine.pushed == [kept]
