"""Text <-> token bookkeeping shared by episodes, values and evaluation.

The engine works on token ids; tasks work on text. These helpers are the only bridge:
prompt encoding (with BOS, spec §3 `append_bos_to_query`) and the character offset at which each
generated token starts (used to assign tokens to reasoning steps by their first character, §1.3).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with BOS prepended when the tokenizer has one (and did not add it)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def decode_response(tokenizer, token_ids: Sequence[int]) -> str:
    """The response text of generated ids: the one decoding every engine and task agree on."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def token_char_starts(tokenizer, token_ids: Sequence[int], text: str | None = None) -> list[int]:
    """Character offset in `decode(token_ids)` at which each token starts.

    Fast path: if re-tokenizing the decoded text gives back the same ids, use the tokenizer's offset
    mapping. Otherwise (a sampled, non-canonical tokenization) measure the decoded length of every
    prefix: exact for any tokenizer, one decode per token, taken only on this rare path.
    """
    ids = list(token_ids)
    if not ids:
        return []
    if text is None:
        text = decode_response(tokenizer, ids)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == ids:
        starts = [int(a) for a, _ in enc["offset_mapping"]]
    else:
        starts = []
        for i in range(len(ids)):
            prefix = decode_response(tokenizer, ids[:i])
            n = len(prefix)
            # A prefix ending inside a multi-byte character decodes its partial bytes to U+FFFD; the
            # token then starts at the character that holds its first byte, not after the stand-ins.
            while n > 0 and prefix[n - 1] == "\ufffd" and (n > len(text) or text[n - 1] != "\ufffd"):
                n -= 1
            starts.append(n)
    # Enforce a valid, non-decreasing sequence within [0, len(text)] (multi-byte characters split
    # across byte-level tokens can make decoded prefix lengths wobble).
    out, prev = [], 0
    for s in starts:
        s = min(max(s, prev), len(text))
        out.append(s)
        prev = s
    return out


def step_token_starts(step_boundaries: Sequence[int], token_starts: Sequence[int]) -> list[int]:
    """For each step k, the index of its first token: the first token whose first character is at
    or after boundary o[k]. A token belongs to the step containing its first character (§1.3), so the
    MC state s_k is `prompt + response_tokens[:step_token_starts[k]]`."""
    starts = list(token_starts)
    return [bisect_left(starts, b) for b in step_boundaries[:-1]]
