"""`loopcpp bench`: llama-bench style speed of looped against unlooped inference, in one process.

Prompt processing (pp: n_prompt tokens from an empty cache) and generation (tg: n_gen tokens one
by one from an empty cache, as llama-bench measures them) for the unlooped model and each loop,
taking turns round after round so that drift in the machine's load hits all of them alike.
Beside each measured time ratio stands the one expected from counting layer evaluations
(expected_time_ratio): the arithmetic a loop adds, which is the floor of its cost.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from tqdm import tqdm

from ._batch import spread_tokens
from .gguf_meta import read_field
from .loop import OFF, LoopConfig
from .model import Model
from .system import rss_bytes



@dataclass(frozen=True)
class LayerCosts:
    """Multiply-adds per token, in weight elements (MoE experts scaled by the share a token uses)."""

    layer: tuple[float, ...]  # each layer's weights, whole
    kv: tuple[float, ...]     # of which its K and V projections (what a kv-only evaluation runs)
    head: float               # the output head, per row whose logits are computed
    q_width: int = 0          # query width (heads x head size): attention costs 2 x q_width per cached position


def layer_costs(path: str | os.PathLike) -> LayerCosts:
    """Per-layer costs read from a GGUF's tensor shapes and attention sizes."""
    import gguf

    reader = gguf.GGUFReader(os.fspath(path))
    arch = read_field(reader, "general.architecture")
    n_layer = int(read_field(reader, f"{arch}.block_count"))
    used = reader.get_field(f"{arch}.expert_used_count")
    total = reader.get_field(f"{arch}.expert_count")
    expert_share = used.contents() / total.contents() if used and total and total.contents() else 1.0
    n_head = reader.get_field(f"{arch}.attention.head_count")
    key_length = reader.get_field(f"{arch}.attention.key_length")
    n_embd = int(read_field(reader, f"{arch}.embedding_length"))
    heads = n_head.contents() if n_head else 0
    heads = max(heads) if isinstance(heads, list) else int(heads)  # per-layer head counts: the widest
    q_width = heads * int(key_length.contents()) if heads and key_length else n_embd
    layer, kv = [0.0] * n_layer, [0.0] * n_layer
    head = embd = 0.0
    for t in reader.tensors:
        n = float(t.n_elements)
        if t.name.startswith("blk."):
            il = int(t.name.split(".")[1])
            if il >= n_layer:
                continue  # e.g. next-token-prediction layers past the stack
            part = t.name.split(".")[2]
            cost = n * expert_share if "_exps" in part else n
            layer[il] += cost
            if part in ("attn_k", "attn_v"):
                kv[il] += cost
            elif part == "attn_qkv":
                kv[il] += cost * 2 / 3  # fused Q/K/V: about two thirds are K and V (no GQA assumed)
        elif t.name == "output.weight":
            head = n
        elif t.name == "token_embd.weight":
            embd = n
    return LayerCosts(tuple(layer), tuple(kv), head or embd, q_width)  # a tied head reuses the embeddings


def window_evaluations(cfg: LoopConfig, n_layer: int) -> tuple[list[float], list[bool]]:
    """Evaluations of each layer per looped ubatch (docs/looping.md): K per window layer, plus a
    stash (kv=last) or shadow (layer mode, kv=first) evaluation feeding the next window layer;
    and which layers end their chain with a kv-only evaluation (its cache writes only)."""
    runs = [1.0] * n_layer
    kv_only = [False] * n_layer
    a, b = cfg.start, cfg.end
    if a is None or b is None:
        raise ValueError(f"loop {cfg} has no concrete window: resolve it for a model first")
    for il in range(a, b + 1):
        runs[il] = cfg.steps
        if cfg.kv == "last":
            if il < b:
                runs[il] += 1
            else:
                kv_only[il] = True
        elif cfg.mode == "layer" and il > a:
            if il < b:
                runs[il] += 1
            else:
                kv_only[il] = True
    return runs, kv_only


def expected_time_ratio(cfg: LoopConfig, costs: LayerCosts, n_tokens: int, n_outputs: int,
                        n_kv: float = 0.0) -> float:
    """Looped over unlooped multiply-adds for one ubatch of n_tokens rows, n_outputs of which
    compute logits, each row attending to n_kv cached positions on average (sliding windows not
    modelled). cfg must be resolved (a concrete window and mode, e.g. Context.loop)."""
    attn = 2.0 * costs.q_width * n_kv  # QK^T and the weighted sum of V, per row and layer
    unlooped = _ubatch_cost(costs, n_tokens, n_outputs, n_kv)
    if not cfg.enabled:
        return 1.0
    runs, kv_only = window_evaluations(cfg, len(costs.layer))
    looped = sum(r * (c + attn) + (kv if k else 0.0) for r, c, kv, k in zip(runs, costs.layer, costs.kv, kv_only))
    return (looped * n_tokens + costs.head * n_outputs) / unlooped


def decode_loops(cfg: LoopConfig, n_gen: int) -> int:
    """How many of n_gen decode steps after a prompt loop."""
    if not cfg.enabled or cfg.decode == "bypass":
        return 0
    if cfg.decode == "full":
        return n_gen
    return min(n_gen, int(cfg.decode.split(":", 1)[1]))


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (where the OS reports it), else its current."""
    try:
        import resource
    except ImportError:  # Windows
        return rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _time_pp(ctx, prompt: Sequence[int]) -> float:
    ctx.reset()
    t0 = time.perf_counter()
    ctx.eval(prompt, logits="last")
    return len(prompt) / (time.perf_counter() - t0)


def _time_tg(ctx, tokens: Sequence[int]) -> tuple[float, int]:
    """Tokens/s of generating `tokens` one by one from an empty cache, and how many of those
    decode steps reused the previous step's graph (llama.cpp's graph reuse)."""
    ctx.reset()
    ctx.perf(reset=True)
    t0 = time.perf_counter()
    for t in tokens:
        ctx.eval([t], logits="last")
    tps = len(tokens) / (time.perf_counter() - t0)
    return tps, ctx.perf()["graphs_reused"]


def _count_nodes(model: Model, spec: str, n_ubatch: int, flash_attn: Optional[bool]) -> tuple[int, int]:
    """Graph nodes of one pp ubatch and one tg step, in a small context that counts them (the
    count costs a Python call per node, so it never runs in the timed context)."""
    n = min(n_ubatch, 64)
    with model.context(n_ctx=n + 8, n_batch=n, n_ubatch=n, flash_attn=flash_attn, count_nodes=True, loop=spec) as ctx:
        ctx.eval(_tokens(model, n))
        pp = ctx.graph_nodes
        ctx.eval(_tokens(model, 1))
        return pp, ctx.graph_nodes


def _tokens(model: Model, n: int) -> list[int]:
    return spread_tokens(model.n_vocab, n)


def run(model: Model, loops: Sequence[str], n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
        n_threads: Optional[int] = None, n_batch: Optional[int] = None, n_ubatch: Optional[int] = None,
        flash_attn: Optional[bool] = None, decode: Optional[str] = None, progress: bool = True) -> dict:
    """Measures the unlooped model and each loop; returns {"config": ..., "rows": [...]}, one row
    per configuration (the unlooped one first) with median tokens/s, spreads, time ratios against
    the unlooped row, expected ratios, memory and graph nodes."""
    if n_prompt < 1 and n_gen < 1:
        raise ValueError("nothing to measure: give n_prompt or n_gen >= 1")
    if repetitions < 1:
        raise ValueError(f"repetitions={repetitions} must be >= 1")
    specs = [OFF] + [s for s in loops if s != OFF]
    if decode:
        specs = [OFF] + [f"{s},decode={decode}" if LoopConfig.parse(s).enabled else s for s in specs[1:]]
    n_batch = n_batch or max(n_prompt, 1)
    n_ubatch = min(n_ubatch or 512, n_batch)
    costs = layer_costs(model.path)
    prompt, gen = _tokens(model, n_prompt), _tokens(model, n_gen)
    pp: dict[str, list[float]] = {s: [] for s in specs}
    tg: dict[str, list[float]] = {s: [] for s in specs}
    info: dict[str, dict] = {}
    with model.context(n_ctx=max(n_prompt, n_gen) + 8, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads,
                       flash_attn=flash_attn) as ctx:
        for spec in specs:  # warm-up: weights paged in, each graph reserved once
            ctx.set_loop(spec)
            _time_pp(ctx, prompt[: min(32, n_prompt)] or gen[:1])
            cfg = ctx.loop
            info[spec] = {"loop": str(cfg) if cfg.enabled else OFF, "memory": ctx.memory(),
                          "expected_pp": _expected_pp(cfg, costs, n_prompt, n_ubatch),
                          "expected_tg": _expected_tg(cfg, costs, n_gen)}
        rounds = [(r, s) for r in range(repetitions) for s in specs]
        for _, spec in tqdm(rounds, desc="bench", unit="run", disable=not progress, file=sys.stderr):
            ctx.set_loop(spec)
            if n_prompt:
                pp[spec].append(_time_pp(ctx, prompt))
            if n_gen:
                tps, reused = _time_tg(ctx, gen)
                tg[spec].append(tps)
                info[spec]["tg_graphs_reused"] = reused
            info[spec]["rss"] = max(info[spec].get("rss", 0), rss_bytes())
    rows = []
    for spec in specs:
        row = {"spec": spec, **info[spec], **run_stats("pp", pp[spec]), **run_stats("tg", tg[spec])}
        row["nodes_pp"], row["nodes_tg"] = _count_nodes(model, spec, n_ubatch, flash_attn)
        rows.append(row)
    for row in rows:
        for kind in ("pp", "tg"):
            if row.get(f"{kind}_tps"):
                row[f"{kind}_time_ratio"] = rows[0][f"{kind}_tps"] / row[f"{kind}_tps"]
    return {"config": {"model": model.description, "path": model.path, "n_prompt": n_prompt, "n_gen": n_gen,
                       "repetitions": repetitions, "n_threads": n_threads, "n_batch": n_batch,
                       "n_ubatch": n_ubatch, "flash_attn": flash_attn,
                       "peak_rss": max([peak_rss_bytes()] + [r.get("rss", 0) for r in rows])},
            "rows": rows}


def _expected_pp(cfg: LoopConfig, costs: LayerCosts, n_prompt: int, n_ubatch: int) -> float:
    """A prompt in ubatches of n_ubatch rows from an empty cache, logits for the last row only."""
    if n_prompt < 1:
        return 1.0
    looped = unlooped = 0.0
    for start in range(0, n_prompt, n_ubatch):
        n = min(n_ubatch, n_prompt - start)
        last = start + n == n_prompt
        base = _ubatch_cost(costs, n, int(last), start + (n + 1) / 2)
        unlooped += base
        looped += base * expected_time_ratio(cfg, costs, n, int(last), start + (n + 1) / 2)
    return looped / unlooped


def _ubatch_cost(costs: LayerCosts, n_tokens: int, n_outputs: int, n_kv: float) -> float:
    """Multiply-adds of one unlooped ubatch (see expected_time_ratio)."""
    return (sum(costs.layer) + 2.0 * costs.q_width * n_kv * len(costs.layer)) * n_tokens + costs.head * n_outputs


def _expected_tg(cfg: LoopConfig, costs: LayerCosts, n_gen: int) -> float:
    """Generation from an empty cache: the decode steps that loop (decode mode) cost a looped
    one-row ubatch, the others an unlooped one."""
    if n_gen < 1:
        return 1.0
    n_loop = decode_loops(cfg, n_gen)
    looped = unlooped = 0.0
    for i in range(n_gen):
        base = _ubatch_cost(costs, 1, 1, i + 1)
        unlooped += base
        looped += base * (expected_time_ratio(cfg, costs, 1, 1, i + 1) if i < n_loop else 1.0)
    return looped / unlooped


def run_stats(kind: str, values: list[float]) -> dict:
    """Median, spread and the runs themselves of one measurement (pp or tg tokens/s)."""
    if not values:
        return {}
    return {f"{kind}_tps": statistics.median(values), f"{kind}_min": min(values), f"{kind}_max": max(values),
            f"{kind}_stdev": statistics.stdev(values) if len(values) > 1 else 0.0, f"{kind}_runs": values}


def format_table(result: dict) -> str:
    c = result["config"]
    mib = 1 << 20
    lines = [f"model: {c['model']}, threads {c['n_threads'] or 'default'}, pp{c['n_prompt']} tg{c['n_gen']}, "
             f"n_ubatch {c['n_ubatch']}, median (min-max) of {c['repetitions']} interleaved rounds; "
             "time x: looped time over unlooped time, measured / expected from the layer evaluations; "
             "reuse: tg steps that reused the previous step's graph"]
    w = max(len(r["spec"]) for r in result["rows"])
    lines.append(f"{'loop':<{w}}  {'pp t/s':>20} {'time x':>13}  {'tg t/s':>20} {'time x':>13}  "
                 f"{'reuse':>7}  {'KV MiB':>7} {'compute MiB':>11} {'nodes pp/tg':>11} {'RSS MiB':>8}")
    for r in result["rows"]:
        cells = []
        for kind in ("pp", "tg"):
            if f"{kind}_tps" in r:
                cells.append(f"{r[f'{kind}_tps']:.1f} ({r[f'{kind}_min']:.1f}-{r[f'{kind}_max']:.1f})")
                cells.append(f"{r[f'{kind}_time_ratio']:.2f} / {r[f'expected_{kind}']:.2f}")
            else:
                cells += ["-", "-"]
        m = r["memory"]
        reuse = f"{r['tg_graphs_reused']}/{c['n_gen']}" if "tg_graphs_reused" in r else "-"
        lines.append(f"{r['spec']:<{w}}  {cells[0]:>20} {cells[1]:>13}  {cells[2]:>20} {cells[3]:>13}  "
                     f"{reuse:>7}  {m['kv'] / mib:7.2f} {m['compute'] / mib:11.2f} {r['nodes_pp']:>5}/{r['nodes_tg']:<5} "
                     f"{r['rss'] / mib:8.0f}")
    lines.append(f"peak RSS of the process: {c['peak_rss'] / mib:.0f} MiB; loops as resolved:")
    lines += [f"  {r['spec']}: {r['loop']}" for r in result["rows"][1:] if r["spec"] != r["loop"]]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """Measured against expected time ratios, pp and tg, one pair of bars per loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    kinds = [k for k in ("pp", "tg") if f"{k}_tps" in rows[0]]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 0.45 * len(rows) + 1.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        y = range(len(rows))
        ax.barh([i - 0.2 for i in y], [r[f"{kind}_time_ratio"] for r in rows], 0.4, label="measured")
        ax.barh([i + 0.2 for i in y], [r[f"expected_{kind}"] for r in rows], 0.4, label="layer evaluations",
                color="lightgray")
        ax.set_yticks(list(y), [r["spec"] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="gray", lw=0.8)
        n = result["config"]["n_prompt" if kind == "pp" else "n_gen"]
        ax.set_xlabel(f"{kind}{n}: time relative to the unlooped model")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(result["config"]["model"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
