"""Runs the unlooped model and every given loop on the same items, in one process.

Each configuration gets its own context (the loop is set once, never switched per item), and the
items are walked in one order, each scored by every configuration before the next item starts:
an interrupted run leaves paired results. Per-item results are appended to a cache file per
(model, task, configuration), so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from ..catalog import cache_dir
from ..context import Context
from ..loop import OFF
from ..model import Model
from . import data, scoring



@dataclass(frozen=True)
class TaskSpec:
    """What to evaluate: a task name (`ppl`, an MC task, a generative task) and its options."""

    task: str
    fmt: str = "rc"              # MC: rc (cloze) or mc (lettered)
    shots: int = 0               # MC: 0 or 5
    split: str = "test"          # dev (choose recipes) or test (report them)
    limit: Optional[int] = None  # items (or perplexity windows) picked at random with seed
    seed: int = 1234
    corpus: str = "boolq"        # ppl: boolq, lambada or a text file
    window: int = 512            # ppl: tokens per window (one ubatch); the second half is scored
    max_tokens: int = 32         # generative: cap on generated tokens (and the task's own cap)
    ubatch: Optional[int] = None  # ppl: split each window into ubatches of this many tokens, so that
                                  # later chunks read earlier ones from the cache (None: one ubatch)

    @property
    def kind(self) -> str:
        if self.task in ("ppl", "kl"):
            return "ppl"
        return "mc" if self.task in data.MC_TASKS else "gen"

    def key(self) -> str:
        """Names the cache of per-item results: everything that changes an item's result."""
        if self.kind == "ppl":
            parts = [self.task, self.corpus if not os.path.isfile(self.corpus) else _file_key(self.corpus),
                     f"w{self.window}", self.split] + ([f"ub{self.ubatch}"] if self.ubatch else [])
        elif self.kind == "mc":
            # "batched": the choices share one batch (scoring.choice_loglikelihoods). llama.cpp's
            # kernels round differently in other batch shapes, so results scored one choice at a
            # time (earlier caches) are not mixed in
            parts = [self.task, self.fmt, f"{self.shots}shot", self.split, "batched"]
        else:
            parts = [self.task, self.split, f"max{self.max_tokens}"]
        return "-".join(p.replace("/", "_") for p in parts)


@dataclass
class TaskResult:
    """Per-item results of every configuration, in the same item order."""

    spec: TaskSpec
    model: str
    configs: list[str]
    items: list[str]
    results: dict[str, list[dict]] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)  # config label -> full recipe

    def to_json(self) -> dict:
        return {"spec": asdict(self.spec), "model": self.model, "configs": self.configs,
                "resolved": self.resolved, "items": self.items, "results": self.results}


class ResultCache:
    """Append-only JSON lines of (item id, result), one file per (model, task, configuration)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self.done: dict[str, dict] = {}
        if path and path.exists():
            with open(path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by an interruption
                        continue
                    self.done[rec["id"]] = rec["result"]

    def put(self, item_id: str, result: dict) -> None:
        self.done[item_id] = result
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"id": item_id, "result": result}) + "\n")


def _file_key(path: str) -> str:
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def model_key(model: Model) -> str:
    """Names a model file in the cache: its name, plus a hash of its path, size and mtime."""
    return f"{Path(model.path).stem}-{_file_key(model.path)}"


def _items(spec: TaskSpec, model: Model, source: Optional[data.Source]) -> tuple[list[str], list, int]:
    """(item ids, items, tokens one ubatch must hold)."""
    if spec.kind == "mc":
        mc = data.mc_items(spec.task, spec.fmt, spec.shots, spec.split, spec.limit, spec.seed, source)
        n = max((scoring.item_rows(model, it) for it in mc), default=1)
        return [it.id for it in mc], mc, n
    if spec.kind == "gen":
        gen = data.gen_items(spec.task, spec.split, spec.limit, spec.seed, source)
        n = max((len(model.tokenize(it.prompt)) for it in gen), default=1)
        return [it.id for it in gen], gen, n
    text = data.corpus_halves(data.corpus_text(spec.corpus, source), spec.split)
    tokens = model.tokenize(text, add_special=False)
    windows = scoring.ppl_windows(tokens, spec.window, model.bos, model.add_bos)
    if not windows:
        raise ValueError(f"the {spec.corpus} text ({len(tokens)} tokens) is shorter than one window of {spec.window}")
    ids = [f"w{i}" for i in range(len(windows))]
    picked = data.subset(list(zip(ids, windows)), spec.limit, spec.seed)
    return [i for i, _ in picked], [w for _, w in picked], spec.window


def evaluate(model: Model, loops: Sequence[str], spec: TaskSpec, n_threads: Optional[int] = None,
             cache: bool = True, progress: bool = True, source: Optional[data.Source] = None,
             context_kw: Optional[dict] = None) -> TaskResult:
    """Scores the unlooped model and each loop spec on the same items of one task."""
    ids, items, n_tokens = _items(spec, model, source)
    n_ctx = n_tokens + (spec.max_tokens + 1 if spec.kind == "gen" else 0)
    if n_ctx > model.n_ctx_train > 0:
        raise ValueError(f"items need {n_ctx} tokens but {Path(model.path).name} was trained on {model.n_ctx_train}; "
                         "use fewer shots, a shorter --window or --limit")
    n_ubatch = spec.ubatch if spec.kind == "ppl" and spec.ubatch else n_tokens
    n_seq = max((len(it.contexts) for it in items), default=1) if spec.kind == "mc" else 1
    kw = dict(n_ctx=n_ctx, n_batch=n_tokens, n_ubatch=n_ubatch, n_threads=n_threads, n_seq_max=n_seq,
              **(context_kw or {}))
    contexts: dict[str, Context] = {}  # by the label the user gave (the spec string)
    resolved: dict[str, str] = {}      # label -> the full recipe it resolves to for this model
    try:
        for loop in [OFF, *loops]:
            ctx = model.context(loop=loop, **kw)
            full = str(ctx.loop) if ctx.loop.enabled else OFF
            if full in resolved.values():
                ctx.close()
                continue
            contexts[loop] = ctx
            resolved[loop] = full
        base_dir = cache_dir() / "eval" / model_key(model) / spec.key()
        caches = {name: ResultCache(base_dir / (_safe(resolved[name]) + ".jsonl") if cache else None)
                  for name in contexts}
        result = TaskResult(spec, str(model.path), list(contexts), ids, {name: [] for name in contexts}, resolved)
        bar = tqdm(list(zip(ids, items)), desc=f"{spec.task} ({len(contexts)} configs)", unit="item",
                   disable=not progress, file=sys.stderr)
        for item_id, item in bar:
            if spec.kind == "ppl":
                _score_window(contexts, caches, item_id, item)
            else:
                for name, ctx in contexts.items():
                    if item_id not in caches[name].done:
                        r = scoring.score_mc(ctx, item) if spec.kind == "mc" else scoring.score_gen(ctx, item, spec.max_tokens)
                        caches[name].put(item_id, r)
            for name in contexts:
                result.results[name].append(caches[name].done[item_id])
        return result
    finally:
        for ctx in contexts.values():
            ctx.close()


def _score_window(contexts: dict[str, Context], caches: dict[str, ResultCache], item_id: str, window) -> None:
    """One perplexity window: the unlooped logits are kept only while the loops are compared
    with them, so a large vocabulary's logits are never stored beyond one window."""
    if all(item_id in c.done for c in caches.values()):
        return
    base = scoring.window_logits(contexts[OFF], window)
    if item_id not in caches[OFF].done:
        caches[OFF].put(item_id, scoring.score_window(base, window))
    for name, ctx in contexts.items():
        if name != OFF and item_id not in caches[name].done:
            caches[name].put(item_id, scoring.compare_window(base, scoring.window_logits(ctx, window), window))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in name.replace(":", "-").replace(",", "_"))
