"""Paired statistics for comparing a loop with the unlooped model on the same items.

Every comparison in `loopcpp eval` is paired: both sides are scored on the same items (or the same
text windows), so the uncertainty is that of the per-item differences, which is much smaller than
that of either side alone.
"""

from __future__ import annotations

import math
import warnings
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


def paired_bootstrap(a: "Sequence[float] | np.ndarray", b: "Sequence[float] | np.ndarray",
                     statistic: Optional[Callable[[np.ndarray, np.ndarray], float]] = None,
                     n_resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of statistic(a, b) (default: mean(b) - mean(a)) over paired units
    (scipy.stats.bootstrap with paired=True).

    Units are resampled with replacement, the same indices for both sides, so that what the two
    have in common (an item's difficulty, a window's text) cancels."""
    from scipy import stats

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {x.shape} and {y.shape}")
    def stat(u, v, axis=-1):  # vectorized over resamples (axis) for the default statistic
        return np.mean(v, axis=axis) - np.mean(u, axis=axis) if statistic is None else statistic(u, v)

    value = float(stat(x, y))
    spread = np.ptp(y - x) if statistic is None else None
    if spread == 0:  # a constant difference: every resample gives it (scipy would warn and give NaN)
        return Interval(value, value, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((x, y), stat, paired=True, vectorized=statistic is None, n_resamples=n_resamples,
                              confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    return Interval(value, float(res.confidence_interval.low), float(res.confidence_interval.high))


def mcnemar(a_correct: "Sequence[bool] | np.ndarray", b_correct: "Sequence[bool] | np.ndarray") -> dict:
    """McNemar's exact test on paired right/wrong outcomes.

    Only the discordant items count: `b_only` that only b gets right, `a_only` that only a gets
    right. Under "no difference" each discordant item falls either way with probability 1/2: the
    p-value is scipy's two-sided exact binomial test of a_only out of the discordant items."""
    from scipy import stats

    x = np.asarray(a_correct, dtype=bool)
    y = np.asarray(b_correct, dtype=bool)
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {x.shape} and {y.shape}")
    a_only = int((x & ~y).sum())
    b_only = int((y & ~x).sum())
    n = a_only + b_only
    p_value = float(stats.binomtest(a_only, n, 0.5).pvalue) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p_value}


def mean_and_stderr(values: "Sequence[float] | np.ndarray") -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
