"""Paired statistics for comparing a loop with the unlooped model on the same items.

Every comparison in `loopcpp eval` is paired: both sides are scored on the same items (or the same
text windows), so the uncertainty is that of the per-item differences, which is much smaller than
that of either side alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval [lo, hi]."""

    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:+.4g} [{self.lo:+.4g}, {self.hi:+.4g}]"


def paired_bootstrap(a: Sequence[float], b: Sequence[float],
                     statistic: Optional[Callable[[np.ndarray, np.ndarray], float]] = None,
                     n_resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of statistic(a, b) (default: mean(b) - mean(a)) over paired units.

    Units are resampled with replacement, the same indices for both sides, so that what the two
    have in common (an item's difficulty, a window's text) cancels."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {a.shape} and {b.shape}")
    if statistic is None:
        value = float(b.mean() - a.mean())
        idx = np.random.default_rng(seed).integers(0, len(a), size=(n_resamples, len(a)))
        boots = (b[idx] - a[idx]).mean(axis=1)
    else:
        value = float(statistic(a, b))
        rng = np.random.default_rng(seed)
        boots = np.empty(n_resamples)
        for i in range(n_resamples):
            idx = rng.integers(0, len(a), size=len(a))
            boots[i] = statistic(a[idx], b[idx])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return Interval(value, float(lo), float(hi))


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong outcomes.

    Only the discordant items count: `b_only` that only b gets right, `a_only` that only a gets
    right. Under "no difference" each discordant item falls either way with probability 1/2, so
    the two-sided p-value is the binomial tail of min(a_only, b_only) doubled."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {a.shape} and {b.shape}")
    a_only = int((a & ~b).sum())
    b_only = int((b & ~a).sum())
    n = a_only + b_only
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


def mean_and_stderr(x: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
