"""Speed of looped vs unlooped inference, llama-bench style (tokens/s), as ratios in one run.

    python benchmarks/bench_loop.py [MODEL] [--loops 13:16x2 13:16x3 ...] [--pp 256] [--tg 64]
        [--reps 3] [--threads N] [--json out.json] [--plot out.png]

pp: prompt processing of --pp tokens in one ubatch (looped unless the loop is off).
tg: generation of --tg tokens one by one (decode=bypass runs them unlooped; decode=full loops).
Expected cost of a looped prompt: about 1 + W(K-1)/N of the unlooped one (W window layers of N),
plus one shadow/stash evaluation per window layer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from tqdm import tqdm

import loopcpp
from loopcpp import catalog

DEFAULT_LOOPS = ["off", "auto", "autox2", "autox4", "autox6", "auto,decode=full", "autox3,layer"]


def bench_once(ctx, prompt: list[int], n_tg: int) -> tuple[float, float]:
    """One pp + tg measurement from an empty cache: (prompt tokens/s, generated tokens/s)."""
    ctx.reset()
    t0 = time.perf_counter()
    ctx.eval(prompt, logits="last")
    pp = len(prompt) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n_tg):
        ctx.eval([prompt[i]], logits="last")
    return pp, n_tg / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--loops", nargs="+", default=DEFAULT_LOOPS)
    ap.add_argument("--pp", type=int, default=256)
    ap.add_argument("--tg", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--plot", help="write a PNG of the speed ratios")
    args = ap.parse_args(argv)

    path = catalog.resolve_model(args.model)
    rows = []
    with loopcpp.Model(path) as model:
        with model.context(n_ctx=args.pp + args.tg + 16, n_batch=args.pp, n_ubatch=args.pp,
                           n_threads=args.threads) as ctx:
            prompt = [(i * 7919) % (model.n_vocab - 10) + 5 for i in range(args.pp)]
            bench_once(ctx, prompt[:16], 4)  # warm-up
            runs: dict[str, list] = {spec: [] for spec in args.loops}
            names: dict[str, str] = {}
            kv_bytes: dict[str, int] = {}
            # round-robin over the loops, so that drift in machine load hits all of them alike
            for _, spec in tqdm([(r, s) for r in range(args.reps) for s in args.loops], desc="runs", file=sys.stderr):
                ctx.set_loop(spec)
                names[spec] = str(ctx.loop) if ctx.loop.enabled else "off"
                runs[spec].append(bench_once(ctx, prompt, args.tg))
                kv_bytes[spec] = len(ctx.kv_state())
            for spec in args.loops:
                rows.append({"loop": names[spec], "pp_tps": statistics.median(r[0] for r in runs[spec]),
                             "tg_tps": statistics.median(r[1] for r in runs[spec]), "kv_bytes": kv_bytes[spec]})
    base = next((r for r in rows if r["loop"] == "off"), rows[0])
    for r in rows:
        r["pp_ratio"] = r["pp_tps"] / base["pp_tps"]
        r["tg_ratio"] = r["tg_tps"] / base["tg_tps"]

    print(f"model: {model.description} ({path.name}), pp{args.pp}, tg{args.tg}, median of {args.reps}")
    w = max(len(r["loop"]) for r in rows)
    print(f"{'loop':<{w}}  {'pp t/s':>8} {'ratio':>6}  {'tg t/s':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['loop']:<{w}}  {r['pp_tps']:8.1f} {r['pp_ratio']:6.2f}  {r['tg_tps']:8.1f} {r['tg_ratio']:6.2f}")
    sizes = sorted({r["kv_bytes"] for r in rows})
    print(f"KV cache after pp{args.pp}+tg{args.tg}: " + (f"{sizes[0]} bytes for every loop" if len(sizes) == 1
          else ", ".join(f"{r['loop']}: {r['kv_bytes']}" for r in rows)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": str(path), "pp": args.pp, "tg": args.tg, "rows": rows}, f, indent=2)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
        y = range(len(rows))
        ax.barh([i - 0.2 for i in y], [r["pp_ratio"] for r in rows], 0.4, label=f"prompt (pp{args.pp})")
        ax.barh([i + 0.2 for i in y], [r["tg_ratio"] for r in rows], 0.4, label=f"generation (tg{args.tg})")
        ax.set_yticks(list(y), [r["loop"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("speed relative to the unlooped model (higher is faster)")
        ax.set_title(model.description)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
