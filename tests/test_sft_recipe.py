"""`vineppo sft` is the paper's recipe (official configs/sft_*.jsonnet, mle_trainer.py):
per-example token mean then mean over examples, log warm-up, last partial batch kept, the target
template of the task and model family."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vineppo.cli import main
from vineppo.sft import (DEEPSEEKMATH_MATH_TARGET, PAPER_TARGET, SFTConfig, _epoch_batches, paper_target_template,
                         sft, sft_examples, sft_loss_share, steps_per_epoch)
from vineppo.tasks import get_task

# two GSM8K rows whose targets differ a lot in length (per-example and token means then differ)
ROWS = [
    {"question": "What is 2 + 3?", "answer": "5\n#### 5"},
    {"question": "Tom has 4 apples and buys 3 more, then eats 2. How many are left?",
     "answer": "Tom has 4 + 3 = <<4+3=7>>7 apples.\nAfter eating 2 he has 7 - 2 = <<7-2=5>>5 left.\n"
               "So the answer is 5 apples in all.\n#### 5"},
]


def test_loss_share_is_per_example_mean_then_mean_over_examples():
    # vocab 2, label 0: CE = log(1 + exp(-x)) for logits [x, 0]
    def ce(x):
        return math.log1p(math.exp(-x))

    logits = torch.zeros(2, 3, 2)
    labels = torch.full((2, 3), -100)
    logits[0, 0, 0] = 2.0                         # example 0: one target token
    labels[0, 0] = 0
    logits[1, :, 0] = torch.tensor([-1.0, 0.5, 3.0])  # example 1: three target tokens
    labels[1, :] = 0
    a, b = ce(2.0), [ce(-1.0), ce(0.5), ce(3.0)]
    per_example = (a + sum(b) / 3) / 2
    tokens = (a + sum(b)) / 4
    assert float(sft_loss_share(logits, labels, "per_example", 2, 4)) == pytest.approx(per_example)
    assert float(sft_loss_share(logits, labels, "tokens", 2, 4)) == pytest.approx(tokens)
    # micro-batch shares add up to the batch loss
    halves = sum(float(sft_loss_share(logits[i:i + 1], labels[i:i + 1], "per_example", 2, 4)) for i in range(2))
    assert halves == pytest.approx(per_example)
    assert SFTConfig().loss_reduction == "per_example"


def _write_fixture(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return d


def _per_example_loss_by_hand(model_dir, examples):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    means = []
    with torch.no_grad():
        for ids, p in examples:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            nll = [-float(logp[t - 1, ids[t]]) for t in range(p, len(ids))]  # position t-1 predicts token t
            means.append(sum(nll) / len(nll))
    return sum(means) / len(means), means


def test_vineppo_sft_loss_is_the_per_example_mean(tiny_model_dir, tiny_tokenizer, tmp_path, one_torch_thread):
    """Done-when: `vineppo sft` on a tiny fixture reports the loss of the per-example mean."""
    data = _write_fixture(tmp_path)
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(tiny_model_dir), "--task", "gsm8k", "--output-dir", str(out),
                 "--data-source", str(data), "--validation-size", "0", "--batch-size", "2",
                 "--micro-batch-size", "1", "--max-steps", "1", "--max-length", "512"]) == 0
    info = json.loads((out / "sft_info.json").read_text())
    examples = sft_examples(get_task("gsm8k"), tiny_tokenizer, ROWS, 512, template=PAPER_TARGET)
    expected, means = _per_example_loss_by_hand(tiny_model_dir, examples)
    lengths = [len(ids) - p for ids, p in examples]
    token_mean = sum(m * n for m, n in zip(means, lengths)) / sum(lengths)
    assert lengths[1] > 5 * lengths[0] and abs(expected - token_mean) > 1e-3  # the two rules differ here
    assert info["final_loss"] == pytest.approx(expected, rel=1e-4)
    assert info["config"]["target_template"] == PAPER_TARGET


def test_log_warmup_first_step_has_lr_zero(tiny_hf_model, tiny_tokenizer, one_torch_thread):
    """DeepSpeed's log warm-up (the paper's) starts at LR 0: one step leaves the weights; linear moves them."""
    import copy

    changed = {}
    for shape in ("log", "linear"):
        model = copy.deepcopy(tiny_hf_model).requires_grad_(True)
        before = [p.detach().clone() for p in model.parameters()]
        sft(model, tiny_tokenizer, get_task("gsm8k"), ROWS, SFTConfig(batch_size=2, micro_batch_size=2, lr=1e-2,
            max_steps=1, max_length=512, warmup_shape=shape), progress=False)
        changed[shape] = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed == {"log": False, "linear": True}
    assert SFTConfig().warmup_shape == "log"


def test_last_partial_batch_is_kept():
    assert steps_per_epoch(10, 4, drop_last=False) == 3 and steps_per_epoch(10, 4, drop_last=True) == 2
    assert steps_per_epoch(3, 4, drop_last=True) == 1  # a lone partial batch is still a step
    batches = _epoch_batches(np.random.default_rng(0), [5] * 10, 4, False, drop_last=False)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(i for b in batches for i in b) == list(range(10))
    assert SFTConfig().drop_last is False


def test_sft_plans_the_partial_batch(tiny_hf_model, tiny_tokenizer, one_torch_thread):
    import copy

    stats = sft(copy.deepcopy(tiny_hf_model).requires_grad_(True), tiny_tokenizer, get_task("gsm8k"), ROWS * 3,
                SFTConfig(epochs=1, batch_size=4, micro_batch_size=4, max_length=512, lr=0.0), progress=False)
    # 6 examples: a batch of 4 and one of 2 (dropping it would start the next epoch: 8 examples)
    assert stats["planned_steps"] == stats["steps"] == 2 and stats["trained_examples"] == 6


def test_target_template_of_task_and_model_family(tiny_tokenizer):
    assert paper_target_template("math", "deepseek-ai/deepseek-math-7b-base") == DEEPSEEKMATH_MATH_TARGET == "\n{solution}"
    assert paper_target_template("math", "microsoft/rho-math-1b-v0.1") == PAPER_TARGET == "\n{solution}\n"
    assert paper_target_template("gsm8k", "/models/DeepSeek-Math-7B") == PAPER_TARGET
    row = {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$."}
    math_task = get_task("math")
    for template, tail in ((DEEPSEEKMATH_MATH_TARGET, "\nIt is $\\boxed{2}$."), (PAPER_TARGET, "\nIt is $\\boxed{2}$.\n")):
        (ids, p), = sft_examples(math_task, tiny_tokenizer, [row], 512, template=template)
        assert ids[-1] == tiny_tokenizer.eos_token_id
        assert tiny_tokenizer.decode(ids[p:-1]) == tail
    with pytest.raises(ValueError, match="placeholder"):
        sft_examples(math_task, tiny_tokenizer, [row], 512, template="\n{answer}")
