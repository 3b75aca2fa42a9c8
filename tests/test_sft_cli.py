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
