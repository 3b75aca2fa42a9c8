"""`vineppo sft`: the paper's SFT recipe from the command line on a tiny model and real GSM8K rows."""

from __future__ import annotations

import json

import torch

from vineppo.cli import build_parser, main


def test_sft_defaults_are_the_paper_recipe():
    args = build_parser().parse_args(["sft", "--model", "m", "--task", "math", "--output-dir", "o"])
    assert (args.epochs, args.batch_size, args.lr, args.warmup_ratio, args.max_length) == (2.0, 64, 1e-5, 0.03, 2048)


def test_sft_example_is_prompt_then_solution_then_eos(tiny_tokenizer):
    from vineppo.sft import sft_examples
    from vineppo.tasks import get_task
    from vineppo.tokens import encode_prompt

    task = get_task("gsm8k")
    row = {"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
    (ids, prompt_len), = sft_examples(task, tiny_tokenizer, [row], 512)
    prompt = encode_prompt(tiny_tokenizer, "[MATH_TASK] Problem:\nWhat is 2 + 3?\n\nSolution:")
    assert ids[:prompt_len] == prompt
    assert ids[-1] == tiny_tokenizer.eos_token_id
    # the target is "\n{solution}\n" with calculator annotations removed (loss only on this part)
    assert tiny_tokenizer.decode(ids[prompt_len:-1]) == "\n2 + 3 = 5\n#### 5\n"


def test_sft_cli_writes_loadable_checkpoint(tiny_model_dir, shared_data_dir, tmp_path, capsys, one_torch_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    argv = ["sft", "--model", str(tiny_model_dir), "--task", "gsm8k", "--output-dir", str(out),
            "--data-source", str(shared_data_dir / "gsm8k"), "--max-train-rows", "8", "--batch-size", "4",
            "--micro-batch-size", "2", "--max-steps", "2", "--max-length", "512", "--lr", "1e-3"]
    assert main(argv) == 0
    assert "sft: 2 steps" in capsys.readouterr().out
    info = json.loads((out / "sft_info.json").read_text())
    assert info["steps"] == 2 and info["train_rows"] == 8 and info["task"] == "gsm8k"
    assert info["config"]["lr"] == 1e-3 and info["config"]["batch_size"] == 4

    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token_id is not None
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed, "two optimizer steps at lr 1e-3 must change the weights"
    assert not (tmp_path / "sft.tmp").exists()

    # a non-empty output directory is not overwritten without --overwrite
    assert main(argv) == 2
    assert main([*argv, "--overwrite"]) == 0


def test_lr_schedules_linear_decays_to_zero_constant_holds():
    import pytest

    from vineppo.trainer import lr_lambda

    lin, const = lr_lambda(100, 0.03), lr_lambda(100, 0.03, "constant")
    # ceil(0.03 * 100) = 3 warmup steps, identical in both
    assert [lin(s) for s in range(3)] == [const(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lin(3) == 1.0 and lin(51) == pytest.approx(49 / 97) and lin(100) == 0.0
    assert all(const(s) == 1.0 for s in range(3, 200))
    with pytest.raises(ValueError, match="cosine"):
        lr_lambda(10, 0.0, "cosine")


def test_sft_epoch_batches_cover_each_example_once_and_group_lengths():
    import numpy as np

    from vineppo.sft import _epoch_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 100, size=1000).tolist()
    for grouped in (False, True):
        batches = _epoch_batches(np.random.default_rng(1), lengths, 32, grouped)
        flat = [i for b in batches for i in b]
        assert len(batches) == 1000 // 32 and all(len(b) == 32 for b in batches)
        assert len(set(flat)) == len(flat) and set(flat) <= set(range(1000))
    pad = {g: np.mean([max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
                       for b in _epoch_batches(np.random.default_rng(1), lengths, 32, g)]) for g in (False, True)}
    assert pad[True] < 0.2 * pad[False]
    # grouped batches still come in a shuffled order of lengths, not shortest-first
    means = [np.mean([lengths[i] for i in b]) for b in _epoch_batches(np.random.default_rng(1), lengths, 32, True)]
    assert means != sorted(means)
