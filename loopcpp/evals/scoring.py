"""Scoring one item (or one text window) on one context: the unit of work of `loopcpp eval`.

Loop semantics in scoring (docs/looping.md, "When the loop runs"): an item is one prompt, so its
context and continuation are evaluated together, from an empty cache, in one ubatch. A
continuation is never decoded on its own: with decode=bypass a lone token would run unlooped.
The choices of a multiple-choice item are parallel sequences of one batch. The contexts that
score items are created with n_batch = n_ubatch >= the rows of the largest item.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..context import Context, Sampling
from .data import GenItem, MCItem
from .metrics import exact_match, kl_divergence, log_softmax, token_f1, token_nll


def encode_pair(model, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokens of context and continuation as lm-eval splits them: the whole string is tokenized
    once (so the boundary merges as the model would see it), and trailing spaces of the context
    move to the continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = model.tokenize(context + continuation, add_special=True)
    ctx_tokens = model.tokenize(context, add_special=True)
    return whole[:len(ctx_tokens)], whole[len(ctx_tokens):]


def item_pairs(model, item: MCItem) -> list[tuple[list[int], list[int]]]:
    return [encode_pair(model, c, k) for c, k in zip(item.contexts, item.continuations)]


def shared_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all of seqs have in common."""
    n = min(map(len, seqs))
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


def item_rows(model, item: MCItem) -> int:
    """Rows of the one batch that scores an item (see choice_loglikelihoods)."""
    seqs = [c + k for c, k in item_pairs(model, item)]
    n = shared_prefix(seqs)
    return n + sum(len(s) - n for s in seqs)


def loglikelihood(ctx: Context, context_tokens: Sequence[int], continuation_tokens: Sequence[int]) -> tuple[float, bool]:
    """log p(continuation | context), and whether the continuation is the greedy one, from one
    evaluation of context + continuation in a single ubatch."""
    tokens = list(context_tokens) + list(continuation_tokens)
    if len(tokens) > ctx.n_ubatch:
        raise ValueError(f"an item of {len(tokens)} tokens does not fit one ubatch of {ctx.n_ubatch}")
    ctx.reset()
    n = len(continuation_tokens)
    logits = ctx.eval(tokens, logits="all")[-n - 1:-1]
    logp = log_softmax(logits)
    targets = np.asarray(continuation_tokens)
    return float(logp[np.arange(n), targets].sum()), bool((logp.argmax(-1) == targets).all())


def choice_loglikelihoods(ctx: Context, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[float]:
    """log p(continuation | context) of every choice of an item from one batch: choice i is
    sequence i; the tokens all choices share (their common prefix) are rows of every sequence,
    the rest of each choice rows of its own. Each sequence has two or more rows, so each is in its
    prompt phase and loops, and per the contract gets what evaluating it alone in one ubatch gives
    (docs/looping.md; tests/test_loop_sequences.py). The item costs one graph, and its shared
    context is computed once. Needs a context with n_seq_max >= choices and n_ubatch >= rows."""
    seqs = [list(c) + list(k) for c, k in pairs]
    n_shared = shared_prefix(seqs)
    tokens, positions = list(seqs[0][:n_shared]), list(range(n_shared))
    seq_ids = [list(range(len(seqs)))] * n_shared
    row_of = []  # row_of[i][p]: the row that holds position p of choice i
    for i, s in enumerate(seqs):
        row_of.append(list(range(n_shared)) + [len(tokens) + j for j in range(len(s) - n_shared)])
        tokens += s[n_shared:]
        positions += range(n_shared, len(s))
        seq_ids += [[i]] * (len(s) - n_shared)
    if len(tokens) > ctx.n_ubatch or len(seqs) > ctx.n_seq_max:
        raise ValueError(f"an item of {len(seqs)} choices and {len(tokens)} rows does not fit one ubatch of "
                         f"{ctx.n_ubatch} with n_seq_max={ctx.n_seq_max}")
    want = [False] * len(tokens)
    for (c, k), rows in zip(pairs, row_of):
        for p in range(len(c) - 1, len(c) + len(k) - 1):
            want[rows[p]] = True
    ctx.reset()
    logits = ctx.eval_batch(tokens, positions, seq_ids, logits=want)
    index = {row: r for r, row in enumerate(i for i, w in enumerate(want) if w)}
    lls = []
    for (c, k), rows in zip(pairs, row_of):
        logp = log_softmax(logits[[index[rows[p]] for p in range(len(c) - 1, len(c) + len(k) - 1)]])
        lls.append(float(logp[np.arange(len(k)), np.asarray(k)].sum()))
    ctx.reset()
    return lls


def score_mc(ctx: Context, item: MCItem) -> dict:
    """Log-likelihood of every choice; `correct` picks the highest raw log-likelihood, `correct_norm`
    the highest per character of the continuation (lm-eval's acc and acc_norm)."""
    lls = choice_loglikelihoods(ctx, item_pairs(ctx.model, item))
    norm = [ll / max(1, len(k)) for ll, k in zip(lls, item.continuations)]
    return {"ll": lls, "correct": int(np.argmax(lls)) == item.gold,
            "correct_norm": int(np.argmax(norm)) == item.gold, "group": item.group}


def score_gen(ctx: Context, item: GenItem, max_tokens: int) -> dict:
    """Greedy generation from an empty cache, scored by exact match and token F1."""
    ctx.reset()
    prompt = ctx.model.tokenize(item.prompt, add_special=True)
    if len(prompt) > ctx.n_ubatch:
        raise ValueError(f"a prompt of {len(prompt)} tokens does not fit one ubatch of {ctx.n_ubatch}")
    text = "".join(t.text for t in ctx.generate(prompt, max_tokens=min(max_tokens, item.max_tokens),
                                                 stop=item.stop, sampling=Sampling(temperature=0.0)))
    return {"output": text, "correct": exact_match(text, item.answers), "f1": token_f1(text, item.answers)}


def ppl_windows(tokens: Sequence[int], n_window: int, bos: int, add_bos: bool) -> list[list[int]]:
    """llama-perplexity's chunks: consecutive windows of n_window tokens, the first token of each
    replaced by BOS when the model adds one."""
    chunks = []
    for start in range(0, len(tokens) - n_window + 1, n_window):
        chunk = list(tokens[start:start + n_window])
        if add_bos:
            chunk[0] = bos
        chunks.append(chunk)
    return chunks


def window_logits(ctx: Context, window: Sequence[int]) -> np.ndarray:
    """Logits of the scored second half of a window (positions n/2 .. n-2, which predict tokens
    n/2+1 .. n-1), from one evaluation of the whole window (one ubatch unless the context's
    n_ubatch is smaller: then later chunks read earlier ones through the cache)."""
    ctx.reset()
    return ctx.eval(list(window), logits="all")[len(window) // 2:-1]


def score_window(logits: np.ndarray, window: Sequence[int]) -> dict:
    targets = list(window[len(window) // 2 + 1:])
    nll = token_nll(logits, targets)
    return {"nll_sum": float(nll.sum()), "n": len(targets)}


def compare_window(base_logits: np.ndarray, logits: np.ndarray, window: Sequence[int]) -> dict:
    """What a loop changes on one window against the unlooped logits: NLL, KL(base || loop) per
    position (kept, a float per token, for the median and the 99th percentile), top-1 agreement."""
    kl = kl_divergence(base_logits, logits)
    return {**score_window(logits, window), "kl_sum": float(kl.sum()), "kl": np.round(kl, 6).tolist(),
            "top1_same": int((base_logits.argmax(-1) == logits.argmax(-1)).sum())}
