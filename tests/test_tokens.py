"""`token_char_starts` and the first-character rule with a real byte-level BPE tokenizer
(trained here with `tokenizers`, offline): merges that span a newline, characters of 2–4 UTF-8
bytes split over several tokens, canonical and non-canonical (sampled) tokenizations."""

from __future__ import annotations

import pytest

from vineppo.tasks import get_task
from vineppo.tokens import step_token_starts, token_char_starts

CORPUS = ["Then x = 1.\nThen y = 2.\nSo café costs 3€.\n#### 3"] * 50


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # no regex pre-split, so merges may cross newlines (".\n", "1.\n", ...), as in many LLM tokenizers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")


def _byte_level_unicode_to_byte() -> dict[str, int]:
    # GPT-2's reversible byte↔unicode table (what ByteLevel uses); rebuilt here as an independent oracle
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def expected_starts(tok, ids: list[int], text: str) -> list[int]:
    """Oracle: a token starts at the character that contains its first byte."""
    u2b = _byte_level_unicode_to_byte()
    char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
    out, pos = [], 0
    for t in tok.convert_ids_to_tokens(ids):
        out.append(char_of_byte[pos] if pos < len(char_of_byte) else len(text))
        pos += len(bytes(u2b[c] for c in t))
    assert pos == len(char_of_byte)
    return out


TEXT = "Then x = 1.\nSo 3€ é\nok 😀 end\n#### 3"


def test_canonical_tokenization_multibyte_and_newline_spanning(bpe):
    ids = bpe(TEXT, add_special_tokens=False)["input_ids"]
    pieces = bpe.convert_ids_to_tokens(ids)
    assert any("Ċ" in p and len(p) > 1 for p in pieces), "the corpus should give a token spanning a newline"
    assert len(ids) > len(TEXT.encode("utf-8")) // 4
    starts = token_char_starts(bpe, ids, TEXT)
    assert starts == expected_starts(bpe, ids, TEXT)
    # the 4 bytes of 😀 are split over several tokens, all starting at the emoji's character
    emoji = TEXT.index("😀")
    assert starts.count(emoji) >= 2


def test_non_canonical_tokenization_takes_the_exact_path(bpe):
    """A sampled sequence need not be the canonical tokenization of its text: split every merged
    token into its single bytes — the decoded text is the same, the offsets must still be right."""
    canon = bpe(TEXT, add_special_tokens=False)["input_ids"]
    vocab = bpe.get_vocab()
    ids = [vocab[ch] for t in bpe.convert_ids_to_tokens(canon[:6]) for ch in t] + canon[6:]
    assert ids != canon and bpe.decode(ids) == TEXT
    assert token_char_starts(bpe, ids, TEXT) == expected_starts(bpe, ids, TEXT)


def test_first_character_rule_keeps_a_boundary_spanning_token_in_the_earlier_step(bpe):
    task = get_task("gsm8k")
    text = "Then x = 1.\nThen y = 2.\n#### 3"
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    starts = token_char_starts(bpe, ids, text)
    assert starts == expected_starts(bpe, ids, text)
    bounds = task.split_steps(text)
    assert bounds == [0, text.index("\nThen y"), len(text)]
    first = step_token_starts(bounds, starts)
    ends = starts[1:] + [len(text)]
    # this corpus merges across the newline: one token covers the step boundary
    spanning = [i for i in range(len(ids)) if starts[i] < bounds[1] < ends[i]]
    assert len(spanning) == 1
    # it starts in step 0, so it belongs to step 0; step 1 opens with the next token
    assert first == [0, spanning[0] + 1]
    assert starts[first[1]] >= bounds[1]
