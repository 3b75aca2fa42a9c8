"""Tiny local models and tokenizers for tests, CI and the demo (nothing is downloaded).

A byte-level BPE tokenizer is trained with `tokenizers` on the given texts (every digit is its own
token, which small models need for arithmetic), wrapped as a `PreTrainedTokenizerFast` and saved so
that `AutoTokenizer.from_pretrained` and vLLM load the *same* tokenizer (a `model_type` whose own
tokenizer class ignores our pre-tokenizer would silently change the ids; see
shared/notes/measured-on-cpu.md, "Tokenizer trap"). The model is a random-init Llama with
head_dim 32 (vLLM's CPU attention needs head_dim >= 32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
#: chat tokens of the tiny chat tokenizer (ChatML, as Qwen's); the end-of-turn token is its EOS
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
#: a ChatML template (Jinja, rendered by transformers' `apply_chat_template`), BOS first
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    #: hidden size (head_dim = hidden_size / num_heads; vLLM's CPU attention needs >= 32)
    hidden_size: int = 128
    #: decoder layers
    num_layers: int = 4
    #: attention heads
    num_heads: int = 4
    #: MLP width
    intermediate_size: int = 512
    #: longest sequence
    max_position_embeddings: int = 2048
    #: the BPE tokenizer's vocabulary cap (it stops when merges run out)
    vocab_size: int = 640


def build_tokenizer(texts: Iterable[str], vocab_size: int = 640, chat: bool = False):
    """Train a byte-level BPE tokenizer on `texts`; returns a `PreTrainedTokenizerFast`.
    `chat`: add ChatML special tokens and `CHAT_TEMPLATE`; EOS is then `<|im_end|>` (the end of an
    assistant turn, where generation stops)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS] + ([IM_START, IM_END] if chat else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=IM_END if chat else EOS, pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig(), seed: int = 0):
    """A random-init tiny Llama sized to `tokenizer`, float32, dropout off."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_tiny(out_dir: str | Path, texts: Iterable[str], cfg: TinyModelConfig = TinyModelConfig(),
              seed: int = 0, chat: bool = False) -> Path:
    """Build and save a tiny model + tokenizer to `out_dir` (loadable with `from_pretrained`);
    `chat`: the tokenizer carries a chat template (see `build_tokenizer`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts, cfg.vocab_size, chat=chat)
    model = build_model(tokenizer, cfg, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
