"""Perplexity vs K for each integrator: the paper's central claim on a real model.

    python benchmarks/sweep_ppl.py [MODEL] [--window S:E] [--ks 1 2 3 4 6 8] [--plot ppl.png] [--json out.json]

naive re-running drifts away as K grows (it integrates to time K instead of 1); euler and the
anchored rk stay near the unlooped model. The text is a few paragraphs of general knowledge
written for this script (no data set is downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

import loopcpp
from loopcpp import catalog

TEXT = """\
The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after \
the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889 as the \
centrepiece of the World's Fair. Water boils at one hundred degrees Celsius at sea level, and it freezes \
at zero. The Pacific is the largest and deepest of the Earth's oceans. Photosynthesis is the process by \
which green plants use sunlight, water and carbon dioxide to make glucose and release oxygen. The human \
heart has four chambers: two atria and two ventricles. William Shakespeare wrote Hamlet, Macbeth and \
Romeo and Juliet. The speed of light in a vacuum is about three hundred thousand kilometres per second."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--window", default="auto", help="S:E, or auto for the default window")
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--integrators", nargs="+", default=["naive", "euler", "rk"])
    ap.add_argument("--mode", default=None, help="block or layer (default: the model's)")
    ap.add_argument("--plot")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    path = catalog.resolve_model(args.model)
    results: dict[str, dict[int, float]] = {}
    with loopcpp.Model(path) as model:
        tokens = model.tokenize(TEXT)
        with model.context(n_ctx=len(tokens) + 8, n_batch=len(tokens) + 8, n_ubatch=len(tokens) + 8) as ctx:
            base = ctx.perplexity(tokens)
            jobs = [(i, k) for i in args.integrators for k in args.ks]
            for integrator, k in tqdm(jobs, desc="loops", file=sys.stderr):
                spec = f"{args.window}x{k},{integrator}" + (f",{args.mode}" if args.mode else "")
                ctx.set_loop(spec)
                results.setdefault(integrator, {})[k] = base if k == 1 else ctx.perplexity(tokens)
            ctx.set_loop(f"{args.window}x2")
            window = f"{ctx.loop.start}:{ctx.loop.end} ({ctx.loop.mode})"
        desc = model.description

    print(f"model: {desc}, window {window}, {len(tokens)} tokens, unlooped perplexity {base:.3f}")
    print(f"{'K':>3}  " + "  ".join(f"{i:>8}" for i in args.integrators))
    for k in args.ks:
        print(f"{k:>3}  " + "  ".join(f"{results[i][k]:8.3f}" for i in args.integrators))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": str(path), "window": window, "unlooped": base, "results": results}, f, indent=2)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for i in args.integrators:
            ax.plot(args.ks, [results[i][k] for k in args.ks], marker="o", label=i)
        ax.axhline(base, color="gray", ls="--", lw=0.8, label="unlooped")
        ax.set_xlabel("K (sub-steps)")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.set_title(f"{desc}, window {window}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
