"""Per-token quantities computed from logits: log-probabilities, NLL, KL divergence, agreement.

All in float64; rows are positions, columns the vocabulary.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

from .._numeric import log_softmax


def token_nll(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """-log p(target) for each row of logits."""
    logp = log_softmax(logits)
    return -logp[np.arange(len(targets)), np.asarray(targets)]


def kl_divergence(base_logits: np.ndarray, other_logits: np.ndarray) -> np.ndarray:
    """KL(base || other) per row, in nats: how far `other` moves each next-token distribution."""
    p_log = log_softmax(base_logits)
    q_log = log_softmax(other_logits)
    return (np.exp(p_log) * (p_log - q_log)).sum(axis=-1)


def perplexity(nll: Sequence[float]) -> float:
    return float(np.exp(np.mean(nll)))


# --- answers of generative tasks, normalised as lm-eval (SQuAD's evaluation script) does ---------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(g) for g in golds)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best bag-of-words F1 between the prediction and any gold answer."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for g in golds:
        gold = normalize_answer(g).split()
        common = sum(min(pred.count(w), gold.count(w)) for w in set(pred))
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
        elif not pred and not gold:
            best = 1.0
    return best
