"""How much a sequence's logits move with what shares its ubatches, looped and unlooped.

Three chat-like sequences (one following the loop, one with the loop turned off, one looping every
decode step) each run a prompt and 12 decode steps, first alone, then in random schedules that mix
them into shared ubatches (prompt rows beside decode rows) the way a server's continuous batching
does. Prints the largest logit difference per schedule. With --loop off it measures llama.cpp's own
batch variance, the floor any server test has to live with (docs/design.md, "The server").

    python benchmarks/batch_invariance.py smollm2-135m --loop off
    python benchmarks/batch_invariance.py smollm2-135m --loop auto --kv f32 --no-flash-attn
    python benchmarks/batch_invariance.py tiny.gguf --loop 2:4x3 --kv f32 --no-flash-attn   # a tests/tinymodels.py model
"""

from __future__ import annotations

import argparse
import random

import numpy as np

import loopcpp
from loopcpp import catalog

QUESTIONS = ["Name three colours.", "What is 2 + 2? Answer briefly.", "Write a haiku about rain and the sea."]


def schedule(rng: random.Random) -> list[list[int]]:
    """Ubatches as lists of sequence ids: each sequence's events are a prompt, then 12 decode steps."""
    pending = {s: 13 for s in range(3)}
    start = {s: rng.randint(0, 4) for s in range(3)}
    t, batches = 0, []
    while any(pending.values()):
        ub = [s for s in range(3) if pending[s] and start[s] <= t and rng.random() < 0.8]
        if ub:
            batches.append(ub)
        for s in ub:
            pending[s] -= 1
        t += 1
    return batches


def run(ctx, prompts, steps, batches, looped: bool) -> dict[int, np.ndarray]:
    ctx.reset()
    ctx.reset_sequence_loops()
    if looped:
        ctx.set_sequence_loop(1, loop=False)
        ctx.set_sequence_loop(2, decode="full")
    done = {s: 0 for s in range(3)}
    out = {s: [] for s in range(3)}
    for ub in batches:
        tokens, positions, seqs = [], [], []
        for s in ub:
            t = prompts[s] if done[s] == 0 else [steps[s][done[s] - 1]]
            p0 = 0 if done[s] == 0 else len(prompts[s]) + done[s] - 1
            tokens += t
            positions += range(p0, p0 + len(t))
            seqs += [s] * len(t)
            done[s] += 1
        want = [i == len(seqs) - 1 or seqs[i] != seqs[i + 1] for i in range(len(seqs))]
        logits = iter(ctx.eval_batch(tokens, positions, seqs, logits=want))
        for i, w in enumerate(want):
            if w:
                out[seqs[i]].append(next(logits))
    return {s: np.stack(v) for s, v in out.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=catalog.DEFAULT_MODEL)
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--kv", choices=["f16", "f32"], default="f16")
    ap.add_argument("--no-flash-attn", action="store_true")
    ap.add_argument("--no-repack", action="store_true")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = loopcpp.Model(catalog.resolve_model(args.model), repack=not args.no_repack)
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    # at most 64 tokens each: the byte-level vocabulary of the tiny test models spells words out
    prompts = [model.tokenize(template.format(q))[:64] for q in QUESTIONS]
    rng = np.random.default_rng(args.seed)
    steps = [rng.integers(100, min(5000, model.n_vocab), 12).tolist() for _ in range(3)]
    looped = args.loop != "off"
    kw = dict(type_k=args.kv, type_v=args.kv, flash_attn=False if args.no_flash_attn else None)
    with model.context(n_ctx=1024, n_batch=256, n_ubatch=256, n_seq_max=4, loop=args.loop, **kw) as ctx:
        alone = {s: run(ctx, prompts, steps, [[s]] * 13, looped)[s] for s in range(3)}
        sched_rng = random.Random(args.seed)
        moved = []
        for _ in range(args.trials):
            got = run(ctx, prompts, steps, schedule(sched_rng), looped)
            moved.append(max(float(np.abs(got[s] - alone[s]).max()) for s in range(3)))
    print(f"{args.model} loop={args.loop} kv={args.kv} flash_attn={'off' if args.no_flash_attn else 'auto'}: "
          f"{sum(m > 0 for m in moved)} of {len(moved)} schedules move a sequence's logits; "
          f"largest move {max(moved):.3g}, median {float(np.median(moved)):.3g}")


if __name__ == "__main__":
    main()
