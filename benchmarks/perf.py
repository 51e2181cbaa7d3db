"""Measurements for docs/performance.md that `loopcpp bench` does not make on its own.

    python benchmarks/perf.py selfmerge [MODEL] --loop 13:16x3 [--rounds 5] [--no-repack] [--json F]
        loopcpp (naive, every ubatch looped) against the same window physically repeated in a
        self-merged GGUF (`loopcpp dup`) run unlooped: pp/tg speed, KV and weight bytes, file
        size, perplexity; the three configurations take turns round after round.
    python benchmarks/perf.py memory [MODEL] [--window 13:16] [--json F] [--plot PNG]
        compute buffer, graph metadata, node budget and nodes used for K = 1 ... 64.
    python benchmarks/perf.py sweep [MODEL] [--rounds 5] [--json F] [--plot PNG]
        measured against expected pp time over K (window of 4) and over the window width (K = 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np
from tqdm import tqdm

import loopcpp
from loopcpp import bench, catalog
from loopcpp.evals import data, scoring
from loopcpp.evals.tune import window_at
from loopcpp.gguf_meta import duplicate_layers


def perplexity(ctx, model, n_windows: int, window: int = 512) -> float:
    """llama-perplexity's protocol on the first n_windows windows of BoolQ's dev passages."""
    tokens = model.tokenize(data.corpus_halves(data.corpus_text("boolq"), "dev"), add_special=False)
    windows = scoring.ppl_windows(tokens, window, model.bos, model.add_bos)[:n_windows]
    nll = n = 0.0
    for w in windows:
        r = scoring.score_window(scoring.window_logits(ctx, w), w)
        nll, n = nll + r["nll_sum"], n + r["n"]
    return float(np.exp(nll / n))


def cmd_selfmerge(args) -> dict:
    path = catalog.resolve_model(args.model)
    cfg = loopcpp.LoopConfig.parse(args.loop)
    n_ctx = max(args.pp, 512) + args.tg + 8
    with tempfile.TemporaryDirectory() as tmp:
        merged = os.path.join(tmp, "selfmerge.gguf")
        layers = duplicate_layers(path, merged, cfg.start, cfg.end, cfg.steps, progress=False)
        configs = {"unlooped": (path, "off"), f"loopcpp {cfg.start}:{cfg.end}x{cfg.steps} naive, decode=full":
                   (path, f"{cfg.start}:{cfg.end}x{cfg.steps},naive,decode=full"),
                   f"self-merge ({len(layers)} layers)": (merged, "off")}
        models = {p: loopcpp.Model(p, repack=args.repack) for p in {path, merged}}
        contexts = {name: models[p].context(n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=args.threads, loop=s)
                    for name, (p, s) in configs.items()}
        prompt = bench._tokens(models[path], args.pp)
        runs = {name: {"pp": [], "tg": []} for name in configs}
        for ctx in contexts.values():  # warm-up
            bench._time_pp(ctx, prompt[:32])
        for _, name in tqdm([(r, n) for r in range(args.rounds) for n in configs], desc="selfmerge", file=sys.stderr):
            runs[name]["pp"].append(bench._time_pp(contexts[name], prompt))
            runs[name]["tg"].append(bench._time_tg(contexts[name], prompt[: args.tg])[0])
        rows = []
        for name, (p, _) in configs.items():
            ctx = contexts[name]
            mem = ctx.memory()
            rows.append({"config": name, "pp_tps": statistics.median(runs[name]["pp"]),
                         "tg_tps": statistics.median(runs[name]["tg"]), "pp_runs": runs[name]["pp"],
                         "tg_runs": runs[name]["tg"], "kv_bytes": mem["kv"], "weight_bytes": mem["model"],
                         "file_bytes": os.path.getsize(p), "ppl": perplexity(ctx, models[p], args.windows)})
        for ctx in contexts.values():
            ctx.close()
        for m in models.values():
            m.close()
    base = rows[0]
    mib = 1 << 20
    print(f"{os.path.basename(path)}, threads {args.threads or 'default'}, repack {args.repack}, pp{args.pp} tg{args.tg}, median of "
          f"{args.rounds} interleaved rounds; perplexity: {args.windows} windows of 512 tokens (BoolQ dev)")
    print(f"{'config':<44} {'pp t/s':>8} {'ratio':>6} {'tg t/s':>8} {'ratio':>6} {'KV MiB':>7} {'weights MiB':>11} "
          f"{'file MiB':>8} {'ppl':>9}")
    for r in rows:
        print(f"{r['config']:<44} {r['pp_tps']:8.1f} {r['pp_tps'] / base['pp_tps']:6.2f} {r['tg_tps']:8.1f} "
              f"{r['tg_tps'] / base['tg_tps']:6.2f} {r['kv_bytes'] / mib:7.2f} {r['weight_bytes'] / mib:11.1f} "
              f"{r['file_bytes'] / mib:8.1f} {r['ppl']:9.3f}")
    return {"model": str(path), "loop": args.loop, "repack": args.repack, "pp": args.pp, "tg": args.tg, "rows": rows}


def cmd_memory(args) -> dict:
    path = catalog.resolve_model(args.model)
    rows = []
    with loopcpp.Model(path) as model:
        window = args.window or "{s}:{e}".format(s=model.default_loop.start, e=model.default_loop.end)
        with model.context(n_ctx=args.ubatch, n_batch=args.ubatch, n_ubatch=args.ubatch, count_nodes=True) as ctx:
            for k in tqdm(args.steps, desc="memory", file=sys.stderr):
                for kv in ("first", "last"):
                    ctx.set_loop(f"{window}x{k},kv={kv}")
                    ctx.reset()
                    ctx.eval(bench._tokens(model, args.ubatch))
                    rows.append({"K": k, "policy": kv, "nodes": ctx.graph_nodes, **ctx.memory()})
    mib = 1 << 20
    print(f"{os.path.basename(path)}, window {window}, one ubatch of {args.ubatch} tokens")
    print(f"{'K':>3} {'kv':>5} {'nodes':>7} {'budget':>7} {'graph meta MiB':>14} {'compute MiB':>11} {'KV MiB':>7}")
    for r in rows:
        print(f"{r['K']:>3} {r['policy']:>5} {r['nodes']:>7} {r['graph_max_nodes']:>7} {r['graph_meta'] / mib:14.2f} "
              f"{r['compute'] / mib:11.2f} {r['kv'] / mib:7.2f}")
    if args.plot:
        plt = _pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        for kv, style in (("first", "-o"), ("last", "--s")):
            rs = [r for r in rows if r["policy"] == kv]
            ks = [r["K"] for r in rs]
            a.plot(ks, [r["nodes"] for r in rs], style, label=f"nodes used, kv={kv}")
            a.plot(ks, [r["graph_max_nodes"] for r in rs], style, alpha=0.4, label=f"node budget, kv={kv}")
            b.plot(ks, [r["compute"] / mib for r in rs], style, label=f"compute buffer, kv={kv}")
            b.plot(ks, [r["graph_meta"] / mib for r in rs], style, alpha=0.4, label=f"graph metadata, kv={kv}")
        for ax in (a, b):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("K")
            ax.legend(fontsize=7)
        a.set_ylabel("graph nodes")
        b.set_ylabel("MiB")
        fig.suptitle(f"{os.path.basename(path)}: window {window}, ubatch {args.ubatch}", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return {"model": str(path), "window": window, "ubatch": args.ubatch, "rows": rows}


def cmd_sweep(args) -> dict:
    path = catalog.resolve_model(args.model)
    with loopcpp.Model(path) as model:
        d = model.default_loop
        centre = (d.start + d.end) / 2
        k_specs = [f"{d.start}:{d.end}x{k}" for k in args.steps]
        widths = [w for w in args.widths if w <= model.n_layer]
        w_specs = []
        for w in widths:
            s, _ = window_at(centre / model.n_layer, w, model.n_layer)
            w_specs.append(f"{s}:{s + w - 1}x3")
        specs = list(dict.fromkeys(k_specs + w_specs))
        out = bench.run(model, specs, n_prompt=args.pp, n_gen=0, repetitions=args.rounds, n_threads=args.threads)
    print(bench.format_table(out))
    by_spec = {r["spec"]: r for r in out["rows"]}
    if args.plot:
        plt = _pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, specs_, xs, label in ((a, k_specs, args.steps, f"K (window {d.start}:{d.end})"),
                                      (b, w_specs, widths, "window width (K = 3)")):
            ax.plot(xs, [by_spec[s]["pp_time_ratio"] for s in specs_], "-o", label="measured")
            ax.plot(xs, [by_spec[s]["expected_pp"] for s in specs_], "--", color="gray", label="layer evaluations")
            ax.set_xlabel(label)
            ax.set_ylabel(f"pp{args.pp} time / unlooped")
            ax.legend(fontsize=8)
        fig.suptitle(f"{os.path.basename(path)}: prompt cost of a loop, median of {args.rounds} rounds", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("selfmerge", "memory", "sweep"):
        p = sub.add_parser(name)
        p.add_argument("model", nargs="?", default=None)
        p.add_argument("--json")
        p.add_argument("-t", "--threads", type=int, default=None)
        if name != "memory":
            p.add_argument("--rounds", type=int, default=5)
            p.add_argument("--pp", type=int, default=512)
        if name != "selfmerge":
            p.add_argument("--plot")
    sub.choices["selfmerge"].add_argument("--loop", required=True)
    sub.choices["selfmerge"].add_argument("--tg", type=int, default=64)
    sub.choices["selfmerge"].add_argument("--windows", type=int, default=4)
    sub.choices["selfmerge"].add_argument("--no-repack", dest="repack", action="store_false",
                                          help="weights as in the file (no AMX or other CPU repacking)")
    sub.choices["memory"].add_argument("--window")
    sub.choices["memory"].add_argument("--ubatch", type=int, default=512)
    sub.choices["memory"].add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    sub.choices["sweep"].add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    sub.choices["sweep"].add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    args = ap.parse_args(argv)
    out = {"selfmerge": cmd_selfmerge, "memory": cmd_memory, "sweep": cmd_sweep}[args.what](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
