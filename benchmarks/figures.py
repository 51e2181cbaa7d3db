"""The paper's figures, reproduced on real GGUFs with `loopcpp.evals` (one command each).

    python benchmarks/figures.py ksweep     MODEL   # 1: metric vs K, naive / euler / rk, + self-merge
    python benchmarks/figures.py strategies MODEL   # 2: rk against the other uniform strategies at equal K
    python benchmarks/figures.py depth      MODEL   # 3: the window centre as a fraction of depth
    python benchmarks/figures.py drift      MODEL   # 4: latent drift of the window output, and its loss
    python benchmarks/figures.py policies   MODEL   # 5: kv=first/last, block/layer, decode modes

Common options: --windows N (perplexity windows of --ctx tokens from the test half of the BoolQ
passages), --out DIR (JSON, default docs/results), --img DIR (PNG, default docs/img).
Every run compares against the unlooped model on the same windows; per-item results are cached,
so a rerun only computes what is missing. Each prints a Markdown table for docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402

import loopcpp  # noqa: E402
from loopcpp import catalog  # noqa: E402
from loopcpp.evals import OFF, TaskSpec, evaluate, summarize  # noqa: E402
from loopcpp.gguf_meta import duplicate_layers  # noqa: E402

K_VALUES = (1, 2, 3, 4, 6, 8)


def ppl_rows(model, specs, args, group: int = 4, **spec_kw) -> dict[str, dict]:
    """Perplexity summary rows by spec (plus "off"), evaluating a few specs per context group."""
    spec = TaskSpec("ppl", corpus=args.corpus, window=args.ctx, limit=args.windows, **spec_kw)
    rows: dict[str, dict] = {}
    for i in range(0, max(1, len(specs)), group):  # no specs: the unlooped model alone
        s = summarize(evaluate(model, specs[i:i + group], spec, n_threads=args.threads), n_resamples=2000)
        rows.update({r["config"]: r for r in s["rows"]})
    return rows


def default_window(model) -> tuple[int, int]:
    return model.default_loop.start, model.default_loop.end


def fig_ksweep(model, args) -> dict:
    s, e = default_window(model)
    specs = [f"{s}:{e}x{k},{integ}" for integ in ("naive", "euler", "rk") for k in K_VALUES if k > 1]
    rows = ppl_rows(model, specs, args)
    # the same window physically repeated, run by the unmodified model (what users do today)
    merged = {}
    for k in K_VALUES[1:]:
        path = Path(args.cache) / f"{Path(model.path).stem}-dup{s}-{e}x{k}.gguf"
        if not path.exists():
            duplicate_layers(model.path, path, s, e, k, progress=False)
        with loopcpp.Model(path) as dup:
            merged[k] = ppl_rows(dup, [], args)[OFF]["ppl"]
    table = {"window": [s, e], "off": rows[OFF]["ppl"], "self_merge": merged,
             "loops": {k: v for k, v in rows.items() if k != OFF}}
    plot_ksweep(table, model, args)
    print(f"| K | naive | euler | rk (β = 0.5) | self-merge (unmodified model) |\n|---|---|---|---|---|")
    print(f"| 1 | {rows[OFF]['ppl']:.3f} | {rows[OFF]['ppl']:.3f} | {rows[OFF]['ppl']:.3f} | {rows[OFF]['ppl']:.3f} |")
    for k in K_VALUES[1:]:
        cells = [rows[f"{s}:{e}x{k},{i}"]["ppl"] for i in ("naive", "euler", "rk")]
        print(f"| {k} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {merged[k]:.3f} |")
    return table


def fig_strategies(model, args) -> dict:
    s, e = default_window(model)
    k = args.k
    specs = [f"{s}:{e}x{k},naive", f"{s}:{e}x{k},euler"] + [f"{s}:{e}x{k},rk,beta={b}" for b in (0.25, 0.5, 0.75)]
    rows = ppl_rows(model, specs, args)
    print(f"| strategy ({s}:{e}, K = {k}) | ppl | Δ ppl [95 % CI] | KLD mean | top-1 same |\n|---|---|---|---|---|")
    print(f"| off | {rows[OFF]['ppl']:.3f} | | | |")
    for sp in specs:
        r = rows[sp]
        d = r["delta_ppl"]
        print(f"| {sp.split(',', 1)[1]} | {r['ppl']:.3f} | {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | "
              f"{r['kld_mean']:.4f} | {100 * r['top1_same']:.1f} % |")
    plot_bars(rows, specs, f"strategies at K = {k}, window {s}:{e}", model, args, "strategies")
    return {"window": [s, e], "k": k, "rows": rows}


def fig_depth(model, args) -> dict:
    n, w = model.n_layer, min(4, model.n_layer)
    specs = [f"{s}:{s + w - 1}x{args.k},rk" for s in range(0, n - w + 1)]
    rows = ppl_rows(model, specs, args)
    points = [((s + (w - 1) / 2) / (n - 1), rows[sp]["ppl"]) for s, sp in enumerate(specs)]
    best = min(points, key=lambda p: p[1])
    print(f"window width {w}, K = {args.k}, rk; unlooped {rows[OFF]['ppl']:.3f}; best centre at "
          f"{best[0]:.2f} of depth (ppl {best[1]:.3f})")
    print("| window | centre / depth | ppl | Δ ppl [95 % CI] |\n|---|---|---|---|")
    for (frac, _), sp in zip(points, specs):
        d = rows[sp]["delta_ppl"]
        print(f"| {sp.split('x')[0]} | {frac:.2f} | {rows[sp]['ppl']:.3f} | {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] |")
    deltas = [rows[sp]["delta_ppl"] for sp in specs]
    plot_depth(points, deltas, rows[OFF]["ppl"], model, args)
    return {"width": w, "k": args.k, "off": rows[OFF]["ppl"], "points": points, "deltas": deltas, "best": best}


# the graph tensor that holds a window's output, by integrator (the last one computed)
OUTPUT_NAMES = {"naive": "l_out", "euler": "loop_step", "rk": "loop_rk"}


def fig_drift(model, args) -> dict:
    """The paper's Figure 2: as K grows, how far the window's output moves from the unlooped
    window output (relative L2 distance per token, averaged), and the next-token loss the rest of
    the model gets from it. Read with an eval callback that copies the window output."""
    from loopcpp.evals import data, metrics, scoring

    s, e = default_window(model)
    text = data.corpus_halves(data.corpus_text(args.corpus), "test")
    tokens = model.tokenize(text, add_special=False)
    windows = scoring.ppl_windows(tokens, args.ctx, model.bos, model.add_bos)[: args.windows]
    names = [f"{n}-{e}" for n in OUTPUT_NAMES.values()]
    kw = dict(n_ctx=args.ctx, n_batch=args.ctx, n_ubatch=args.ctx, n_threads=args.threads, capture=names)

    def run(ctx, output: str, base=None):
        """(the window output of each window, its mean relative distance from `base`, the mean
        next-token NLL)."""
        outs, dist, nll, n = [], 0.0, 0.0, 0
        for i, w in enumerate(windows):
            ctx.reset()
            logits = ctx.eval(w, logits="all")
            y = ctx.captured[f"{output}-{e}"][-1]  # the last one computed is the window's output
            outs.append(y)
            if base is not None:
                dist += float((np.linalg.norm(y - base[i], axis=1) / np.linalg.norm(base[i], axis=1)).mean())
            nll += float(metrics.token_nll(logits[:-1], w[1:]).sum())
            n += len(w) - 1
        return outs, dist / len(windows), nll / n

    with model.context(**kw) as ctx:
        base, _, base_nll = run(ctx, "l_out")
        curves = {}
        for integ, output in OUTPUT_NAMES.items():
            curves[integ] = {1: (0.0, base_nll)}
            for k in K_VALUES[1:]:
                ctx.set_loop(f"{s}:{e}x{k},{integ}")
                curves[integ][k] = run(ctx, output, base)[1:]
    print(f"window {s}:{e}; relative distance of the window output from the unlooped one, and next-token NLL")
    print("| K | " + " | ".join(f"{i} distance | {i} NLL" for i in OUTPUT_NAMES) + " |")
    print("|---|" + "---|---|" * len(OUTPUT_NAMES))
    for k in K_VALUES:
        print(f"| {k} | " + " | ".join(f"{curves[i][k][0]:.3f} | {curves[i][k][1]:.3f}" for i in OUTPUT_NAMES) + " |")
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for integ, style in zip(OUTPUT_NAMES, ("o-", "s-", "^-")):
        a1.plot(K_VALUES, [curves[integ][k][0] for k in K_VALUES], style, label=integ)
        a2.plot(K_VALUES, [curves[integ][k][1] for k in K_VALUES], style, label=integ)
    a1.set_xlabel("K")
    a1.set_ylabel("‖y_K − y_1‖ / ‖y_1‖ (window output)")
    a2.set_xlabel("K")
    a2.set_ylabel("next-token NLL (nats)")
    a2.set_yscale("log")
    a1.legend()
    fig.suptitle(f"{model.description}: latent drift, window {s}:{e}")
    _save(fig, model, args, "drift")
    return {"window": [s, e], "curves": curves}


def fig_policies(model, args) -> dict:
    """Where the cache policy and the decode mode can matter: chunked perplexity (later ubatches
    read the window's cache entries) and generation (exact match)."""
    s, e = default_window(model)
    base = f"{s}:{e}x{args.k}"
    specs = [f"{base},kv=first", f"{base},kv=last", f"{base},layer,kv=first", f"{base},layer,kv=last",
             f"{base},decode=full", f"{base},decode=first:8"]
    chunked = ppl_rows(model, specs, args, ubatch=args.ctx // 4)
    gen_spec = TaskSpec(args.gen_task, limit=args.gen_limit, max_tokens=24)
    gen = {r["config"]: r for r in summarize(evaluate(model, specs, gen_spec, n_threads=args.threads))["rows"]}
    print(f"| recipe | chunked ppl (ubatch {args.ctx // 4}) | Δ ppl [95 % CI] | {args.gen_task} EM | Δ EM pp [95 % CI] |")
    print("|---|---|---|---|---|")
    print(f"| off | {chunked[OFF]['ppl']:.3f} | | {100 * gen[OFF]['em']:.1f} | |")
    for sp in specs:
        d, g = chunked[sp]["delta_ppl"], gen[sp]["delta_em_pp"]
        print(f"| {sp} | {chunked[sp]['ppl']:.3f} | {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | "
              f"{100 * gen[sp]['em']:.1f} | {g['value']:+.1f} [{g['lo']:+.1f}, {g['hi']:+.1f}] |")
    return {"chunked": chunked, "generation": gen}


# --- plots ---------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, model, args, name: str) -> None:
    path = Path(args.img) / f"{name}-{Path(model.path).stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def plot_ksweep(table, model, args) -> None:
    plt = _plt()
    s, e = table["window"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for integ, style in (("naive", "o-"), ("euler", "s-"), ("rk", "^-")):
        ys = [table["off"]] + [table["loops"][f"{s}:{e}x{k},{integ}"]["ppl"] for k in K_VALUES[1:]]
        ax.plot(K_VALUES, ys, style, label=integ)
    ax.plot(K_VALUES, [table["off"]] + [table["self_merge"][k] for k in K_VALUES[1:]], "x--", color="gray",
            label="self-merge GGUF (unmodified model)")
    ax.set_yscale("log")
    ax.set_xlabel("K (sub-steps)")
    ax.set_ylabel("perplexity (BoolQ passages, log scale)")
    ax.set_title(f"{model.description}: window {s}:{e}")
    ax.legend()
    _save(fig, model, args, "ksweep")


def plot_bars(rows, specs, title, model, args, name) -> None:
    """Each recipe's perplexity change against the unlooped model, with its paired 95 % interval."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    d = [rows[sp]["delta_ppl"] for sp in specs]
    ax.barh(range(len(specs)), [x["value"] for x in d],
            xerr=[[x["value"] - x["lo"] for x in d], [x["hi"] - x["value"] for x in d]], capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(specs)), [sp.split(",", 1)[1] for sp in specs])
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel(f"Δ perplexity vs unlooped ({rows[OFF]['ppl']:.2f}), 95 % CI; symlog scale")
    ax.set_title(f"{model.description}: {title}")
    _save(fig, model, args, name)


def plot_depth(points, deltas, off, model, args) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.axvspan(0.43, 0.71, color="tab:green", alpha=0.15, label="paper's best band (0.43-0.71)")
    x = [p[0] for p in points]
    ax.errorbar(x, [d["value"] for d in deltas], yerr=[[d["value"] - d["lo"] for d in deltas],
                [d["hi"] - d["value"] for d in deltas]], fmt="o-", capsize=2, label=f"rk, K = {args.k}, width 4")
    ax.axhline(0, color="k", lw=1, label=f"unlooped ({off:.2f})")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("window centre / depth")
    ax.set_ylabel("Δ perplexity, 95 % CI (symlog)")
    ax.set_title(model.description)
    ax.legend(loc="upper center")
    _save(fig, model, args, "depth")


FIGURES = {"ksweep": fig_ksweep, "strategies": fig_strategies, "depth": fig_depth, "drift": fig_drift,
           "policies": fig_policies}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figure", choices=list(FIGURES))
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--windows", type=int, default=8, help="perplexity windows (default: 8)")
    ap.add_argument("--ctx", type=int, default=512, help="tokens per window (default: 512)")
    ap.add_argument("--corpus", default="boolq")
    ap.add_argument("--k", type=int, default=3, help="K for strategies, depth and policies (default: 3)")
    ap.add_argument("--gen-task", default="squad")
    ap.add_argument("--gen-limit", type=int, default=150)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--cache", default=str(catalog.cache_dir() / "selfmerge"))
    args = ap.parse_args(argv)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    path = catalog.resolve_model(args.model)
    with loopcpp.Model(path) as model:
        print(f"## {args.figure}: {model.description} ({path.name}), {args.windows} x {args.ctx}-token windows\n")
        out = FIGURES[args.figure](model, args)
    dest = Path(args.out) / f"{args.figure}-{path.stem}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
