"""`loopcpp tune`: find a loop recipe for a model in minutes, and check it on held-out data.

1. Prune: recipes are scored by perplexity and KL against the unlooped model on a few hundred
   tokens of dev text, in one context whose loop is switched per recipe. The search is staged, one
   coordinate at a time, so that it costs about 20 forward passes instead of a grid's 100:
   where the window sits (centre and width, at K = 3 with rk), then the integrator, then K, then
   block or layer mode, each stage varying the best `beam` recipes so far. `exhaustive=True`
   scores the whole grid instead.
2. Confirm: the best few are compared with the unlooped model on the objective, on dev data:
   perplexity on more dev text, or accuracy on the dev split of a multiple-choice task.
3. Report: the chosen recipe against the unlooped model on test data it was not chosen on.

The cache policy is not searched: when each item is scored in one ubatch, `kv=first` and
`kv=last` give identical results (docs/looping.md); it matters for generation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..model import Model
from . import data, scoring
from .metrics import kl_divergence, token_nll
from .report import summarize
from .runner import OFF, TaskSpec, evaluate

CENTRES = (0.35, 0.47, 0.6)
WIDTHS = (2, 4)
STEPS = (2, 3, 4)
INTEGRATORS = ("euler", "rk,beta=0.5", "rk,beta=0.3")
MODES = ("block", "layer")

# the staged search: window centres first (around the paper's 0.43-0.71 band), then one coordinate
# at a time from the paper's default (K = 3, rk, beta = 0.5)
STAGED_CENTRES = (0.3, 0.4, 0.5, 0.6, 0.7)


def window_at(centre: float, width: int, n_layer: int) -> tuple[int, int]:
    """(start, width) of a window of `width` layers centred near centre * n_layer, clipped to the model."""
    width = min(width, n_layer)
    start = min(max(0, round(centre * n_layer - (width - 1) / 2)), n_layer - width)
    return start, width


@dataclass(frozen=True)
class Recipe:
    start: int
    width: int
    steps: int = 3
    integrator: str = "rk,beta=0.5"
    mode: str = "block"

    @property
    def spec(self) -> str:
        return f"{self.start}:{self.start + self.width - 1}x{self.steps},{self.mode},{self.integrator}"


def candidates(n_layer: int, moe: bool, centres: Sequence[float] = CENTRES, widths: Sequence[int] = WIDTHS,
               steps: Sequence[int] = STEPS, integrators: Sequence[str] = INTEGRATORS,
               modes: Optional[Sequence[str]] = None) -> list[str]:
    """Spec strings of the full search grid, windows clipped to the model and deduplicated."""
    modes = modes or (("layer",) if moe else MODES)
    out: list[str] = []
    for w in widths:
        for c in centres:
            s, w2 = window_at(c, w, n_layer)
            for k in steps:
                for integ in integrators:
                    for mode in modes:
                        spec = Recipe(s, w2, k, integ, mode).spec
                        if spec not in out:
                            out.append(spec)
    return out


@dataclass
class Candidate:
    spec: str
    ppl: float
    kld: float
    stage: str = "grid"


class Pruner:
    """Scores recipes on a few dev windows against the unlooped model, in one context.

    Pruning is a cheap proxy, so it scores every position of a window after its first eighth
    (not llama-perplexity's second half): about twice the evidence for the same forward passes."""

    def __init__(self, model: Model, tokens: Sequence[int], window: int, n_windows: int,
                 n_threads: Optional[int] = None):
        self.windows = scoring.ppl_windows(tokens, window, model.bos, model.add_bos)[:n_windows]
        if not self.windows:
            raise ValueError(f"the dev text is shorter than one window of {window} tokens")
        self.first = window // 8
        self.ctx = model.context(n_ctx=window, n_batch=window, n_ubatch=window, n_threads=n_threads)
        try:
            self.base = [self._logits(w) for w in self.windows]
        except BaseException:
            self.ctx.close()
            raise
        nll = sum(token_nll(b, self._targets(w)).sum() for b, w in zip(self.base, self.windows))
        self.n = sum(len(self._targets(w)) for w in self.windows)
        self.ppl_off = float(np.exp(nll / self.n))
        self.scored: dict[str, Candidate] = {}

    def _logits(self, window: Sequence[int]) -> np.ndarray:
        self.ctx.reset()
        return self.ctx.eval(list(window), logits="all")[self.first:-1]

    def _targets(self, window: Sequence[int]) -> list[int]:
        return list(window[self.first + 1:])

    def score(self, spec: str, stage: str = "grid") -> Candidate:
        if spec not in self.scored:
            self.ctx.set_loop(spec)
            nll = kl = 0.0
            for b, w in zip(self.base, self.windows):
                logits = self._logits(w)
                nll += float(token_nll(logits, self._targets(w)).sum())
                kl += float(kl_divergence(b, logits).sum())
            self.scored[spec] = Candidate(spec, float(np.exp(nll / self.n)), kl / self.n, stage)
        return self.scored[spec]

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> "Pruner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def staged_search(score: Callable[[Recipe, str], Candidate], n_layer: int, moe: bool, beam: int = 2,
                  max_kld: float = 0.5, progress: bool = True) -> list[Candidate]:
    """Coordinate search: every window (STAGED_CENTRES x WIDTHS) at the default recipe, then for the
    best `beam` recipes so far every integrator, then every K, then the other mode. Returns all
    scored candidates, best perplexity first. A recipe whose KL exceeds max_kld is never a seed."""
    mode = "layer" if moe else "block"
    scored: dict[Recipe, Candidate] = {}
    bar = tqdm(desc="prune", unit="recipe", disable=not progress, file=sys.stderr)

    def run(stage: str, recipes: Iterable[Recipe]) -> None:
        todo = [r for r in dict.fromkeys(recipes) if r not in scored]
        bar.total = (bar.total or 0) + len(todo)
        for r in todo:
            bar.set_postfix_str(f"{stage}: {r.spec}", refresh=False)
            scored[r] = score(r, stage)
            bar.update()

    def best() -> list[Recipe]:
        ranked = sorted(scored, key=lambda r: (scored[r].kld > max_kld, scored[r].ppl))
        return ranked[:beam]

    run("window", (Recipe(*window_at(c, w, n_layer), mode=mode) for w in WIDTHS for c in STAGED_CENTRES))
    run("integrator", (replace(r, integrator=i) for r in best() for i in INTEGRATORS))
    run("steps", (replace(r, steps=k) for r in best() for k in STEPS))
    if not moe:  # MoE models loop in layer mode only (routing freeze)
        run("mode", (replace(r, mode=m) for r in best() for m in MODES))
    bar.close()
    return sorted(scored.values(), key=lambda c: c.ppl)


def _objective(summary: dict, name: str) -> float:
    """Higher is better."""
    row = next(r for r in summary["rows"] if r["config"] == name)
    return -row["ppl"] if summary["kind"] == "ppl" else row["acc"]


def _significant(summary: dict, name: str) -> bool:
    """Whether the paired 95 % interval of name's gain over the unlooped model excludes zero."""
    row = next(r for r in summary["rows"] if r["config"] == name)
    return row["delta_ppl"]["hi"] < 0 if summary["kind"] == "ppl" else row["delta_acc_pp"]["lo"] > 0


def tune(model: Model, objective: str = "ppl", corpus: str = "boolq", keep: int = 3, prune_windows: int = 1,
         window: int = 384, confirm_window: int = 512, limit: Optional[int] = 100, max_kld: float = 0.5,
         grid: Optional[list[str]] = None, exhaustive: bool = False, beam: int = 2, n_threads: Optional[int] = None,
         progress: bool = True, source: Optional[data.Source] = None) -> dict:
    """Searches, confirms on dev, reports on test. `objective`: "ppl" or a multiple-choice task.
    `window`: pruning tokens per window; `confirm_window`: the ppl objective's window (llama-perplexity
    protocol). `grid` (spec strings) or `exhaustive` (the full grid) replace the staged search."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    dev_text = data.corpus_halves(data.corpus_text(corpus, source), "dev")
    tokens = model.tokenize(dev_text, add_special=False)[: window * prune_windows + 1]
    with Pruner(model, tokens, window, prune_windows, n_threads) as pruner:
        if grid is not None or exhaustive:
            grid = grid if grid is not None else candidates(model.n_layer, model.n_expert > 0)
            bar = tqdm(grid, desc="prune", unit="recipe", disable=not progress, file=sys.stderr)
            ranked = sorted((pruner.score(s) for s in bar), key=lambda c: c.ppl)
        else:
            ranked = staged_search(lambda r, stage: pruner.score(r.spec, stage), model.n_layer,
                                   model.n_expert > 0, beam, max_kld, progress)
        base_ppl = pruner.ppl_off
    seconds["prune"] = time.perf_counter() - t0
    # a recipe that moves the model far from itself is a collapse, whatever a short text says
    shortlist = [c for c in ranked if c.kld <= max_kld][:keep] or ranked[:1]

    def spec_of(split: str) -> TaskSpec:
        if objective == "ppl":  # `limit` counts items; a window of 512 tokens weighs about 25 of them
            return TaskSpec("ppl", corpus=corpus, window=confirm_window, split=split, limit=limit and max(4, limit // 25))
        return TaskSpec(objective, split=split, limit=limit)

    t1 = time.perf_counter()
    dev = summarize(evaluate(model, [c.spec for c in shortlist], spec_of("dev"), n_threads=n_threads,
                             progress=progress, source=source))
    best = max((c.spec for c in shortlist), key=lambda s: _objective(dev, s))
    # when nothing beats the unlooped model on dev, say so rather than bake noise
    chosen = best if _objective(dev, best) > _objective(dev, OFF) else None
    seconds["confirm"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    test = summarize(evaluate(model, [best], spec_of("test"), n_threads=n_threads, progress=progress, source=source))
    seconds["test"] = time.perf_counter() - t2
    return {"objective": objective, "search": "grid" if grid is not None else "staged", "grid": len(ranked),
            "prune_tokens": pruner.n, "prune_ppl_off": base_ppl, "pruned": [c.__dict__ for c in ranked],
            "shortlist": [c.spec for c in shortlist], "dev": dev, "best": best, "chosen": chosen,
            "significant": chosen is not None and _significant(dev, chosen), "test": test, "seconds": seconds}
