"""`loopcpp tune`: find a loop recipe for a model in minutes, and check it on held-out data.

1. Prune: every candidate of a grid (window centre and width, K, integrator and beta, mode) is
   scored by perplexity and KL against the unlooped model on a few hundred tokens of dev text,
   in one context whose loop is switched per candidate.
2. Confirm: the best few are compared with the unlooped model on the objective, on dev data:
   perplexity on more dev text, or accuracy on the dev split of a multiple-choice task.
3. Report: the chosen recipe against the unlooped model on test data it was not chosen on.

The cache policy is not searched: when each item is scored in one ubatch, `kv=first` and
`kv=last` give identical results (docs/looping.md); it matters for generation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..model import Model
from . import data, scoring
from .report import summarize
from .runner import OFF, TaskSpec, evaluate

CENTRES = (0.35, 0.47, 0.6)
WIDTHS = (2, 4)
STEPS = (2, 3, 4)
INTEGRATORS = ("euler", "rk,beta=0.5", "rk,beta=0.3")


def candidates(n_layer: int, moe: bool, centres: Sequence[float] = CENTRES, widths: Sequence[int] = WIDTHS,
               steps: Sequence[int] = STEPS, integrators: Sequence[str] = INTEGRATORS,
               modes: Optional[Sequence[str]] = None) -> list[str]:
    """Spec strings of the search grid, windows clipped to the model and deduplicated."""
    modes = modes or (("layer",) if moe else ("block", "layer"))
    out: list[str] = []
    for w in widths:
        w = min(w, n_layer)
        for c in centres:
            s = min(max(0, round(c * n_layer - (w - 1) / 2)), n_layer - w)
            for k in steps:
                for integ in integrators:
                    for mode in modes:
                        spec = f"{s}:{s + w - 1}x{k},{mode},{integ}"
                        if spec not in out:
                            out.append(spec)
    return out


@dataclass
class Candidate:
    spec: str
    ppl: float
    kld: float


def prune(model: Model, specs: Sequence[str], tokens: Sequence[int], window: int, n_windows: int,
          n_threads: Optional[int] = None, progress: bool = True) -> tuple[float, list[Candidate]]:
    """Perplexity and mean KL of each candidate on the first n_windows windows of tokens; returns
    the unlooped perplexity and the candidates, best perplexity first."""
    windows = scoring.ppl_windows(tokens, window, model.bos, model.add_bos)[:n_windows]
    if not windows:
        raise ValueError(f"the dev text is shorter than one window of {window} tokens")
    with model.context(n_ctx=window, n_batch=window, n_ubatch=window, n_threads=n_threads) as ctx:
        base = [scoring.window_logits(ctx, w) for w in windows]
        scores = [scoring.score_window(b, w) for b, w in zip(base, windows)]
        base_nll, n = sum(r["nll_sum"] for r in scores), sum(r["n"] for r in scores)
        out = []
        for spec in tqdm(specs, desc="prune", unit="recipe", disable=not progress, file=sys.stderr):
            ctx.set_loop(spec)
            nll = kl = 0.0
            for b, w in zip(base, windows):
                r = scoring.compare_window(b, scoring.window_logits(ctx, w), w)
                nll, kl = nll + r["nll_sum"], kl + r["kl_sum"]
            out.append(Candidate(spec, float(np.exp(nll / n)), kl / n))
    return float(np.exp(base_nll / n)), sorted(out, key=lambda c: c.ppl)


def _objective(summary: dict, name: str) -> float:
    """Higher is better."""
    row = next(r for r in summary["rows"] if r["config"] == name)
    return -row["ppl"] if summary["kind"] == "ppl" else row["acc"]


def tune(model: Model, objective: str = "ppl", corpus: str = "boolq", keep: int = 4, prune_windows: int = 2,
         window: int = 256, limit: Optional[int] = 200, max_kld: float = 0.5, grid: Optional[list[str]] = None,
         n_threads: Optional[int] = None, progress: bool = True, source: Optional[data.Source] = None) -> dict:
    """Searches, confirms on dev, reports on test. `objective`: "ppl" or a multiple-choice task."""
    grid = grid or candidates(model.n_layer, model.n_expert > 0)
    dev_text = data.corpus_halves(data.corpus_text(corpus, source), "dev")
    tokens = model.tokenize(dev_text, add_special=False)[: window * (prune_windows + 1)]
    base_ppl, ranked = prune(model, grid, tokens, window, prune_windows, n_threads, progress)
    # a recipe that moves the model far from itself is a collapse, whatever a short text says
    shortlist = [c for c in ranked if c.kld <= max_kld][:keep] or ranked[:1]

    def spec_of(split: str) -> TaskSpec:
        if objective == "ppl":  # `limit` counts items; a window of 512 tokens weighs about 25 of them
            return TaskSpec("ppl", corpus=corpus, window=window * 2, split=split, limit=limit and max(4, limit // 25))
        return TaskSpec(objective, split=split, limit=limit)

    dev = summarize(evaluate(model, [c.spec for c in shortlist], spec_of("dev"), n_threads=n_threads,
                             progress=progress, source=source))
    best = max((c.spec for c in shortlist), key=lambda s: _objective(dev, s))
    # when nothing beats the unlooped model on dev, say so rather than bake noise
    chosen = best if _objective(dev, best) > _objective(dev, OFF) else None
    test = summarize(evaluate(model, [best], spec_of("test"), n_threads=n_threads, progress=progress, source=source))
    return {"objective": objective, "grid": len(grid), "prune_ppl_off": base_ppl,
            "pruned": [c.__dict__ for c in ranked], "shortlist": [c.spec for c in shortlist],
            "dev": dev, "best": best, "chosen": chosen, "test": test}
