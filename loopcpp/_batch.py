"""Filling llama.cpp's batches, for the bindings and for the stock-build benchmark child (which
drives another libllama through its own FFI, so nothing here touches a loaded library)."""

from __future__ import annotations

from typing import Sequence


def fill_sequence(batch, tokens: Sequence[int], pos0: int, logits: Sequence[bool], seq: int = 0) -> None:
    """Puts tokens of one sequence at positions pos0.. into a llama_batch; logits[i] asks for
    row i's logits."""
    batch.n_tokens = len(tokens)
    for i, t in enumerate(tokens):
        batch.token[i] = t
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = bool(logits[i])


def spread_tokens(n_vocab: int, n: int) -> list[int]:
    """n ordinary token ids spread over the vocabulary, for timing (llama-bench uses random ones)."""
    return [(i * 7919) % (n_vocab - 10) + 5 for i in range(n)]
