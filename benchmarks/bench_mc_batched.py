"""Multiple-choice scoring: an item's choices as parallel sequences of one batch (what `loopcpp
eval` does) against one ubatch per choice, on the same items, interleaved rounds.

Prints the time of each and the largest difference in a choice's log-likelihood, which is
llama.cpp's rounding in other batch shapes (it is there with the loop off too).

    python benchmarks/bench_mc_batched.py smollm2-135m --loop auto --limit 40
"""

from __future__ import annotations

import argparse
import statistics
import time

import loopcpp
from loopcpp import catalog
from loopcpp.evals import data, scoring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=catalog.DEFAULT_MODEL)
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--task", default="arc_easy")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = loopcpp.Model(catalog.resolve_model(args.model))
    items = data.mc_items(args.task, split="dev", limit=args.limit)
    pairs = [scoring.item_pairs(model, it) for it in items]
    rows = max(scoring.item_rows(model, it) for it in items)
    n_seq = max(len(p) for p in pairs)
    with model.context(n_ctx=rows, n_batch=rows, n_ubatch=rows, n_seq_max=n_seq, n_threads=args.threads,
                       loop=args.loop) as ctx:
        t_one, t_batched, diff = [], [], 0.0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            one = [[scoring.loglikelihood(ctx, c, k)[0] for c, k in p] for p in pairs]
            t_one.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            batched = [scoring.choice_loglikelihoods(ctx, p) for p in pairs]
            t_batched.append(time.perf_counter() - t0)
            diff = max(diff, max(abs(x - y) for u, v in zip(one, batched) for x, y in zip(u, v)))
    a, b = statistics.median(t_one), statistics.median(t_batched)
    print(f"{args.model} loop={args.loop} {args.task} {len(items)} items: one ubatch per choice {a:.2f} s, "
          f"choices batched {b:.2f} s ({a / b:.2f}x); largest log-likelihood difference {diff:.3g} nats")


if __name__ == "__main__":
    main()
