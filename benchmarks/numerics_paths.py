"""How far each alternative numerics path of this machine moves a model's logits.

The tests run twice in CI (.ci/run): once as they are, once on another numerics path of the same
machine, so that a test leaning on one CPU's rounding fails here rather than on the next machine.
This picks that path: it evaluates one text on each candidate, in a process of its own (the
switches are environment variables that llama.cpp's tools read too), and prints how far each moves
the logits from the default path, with the share of positions whose top token stays the same.

    python benchmarks/numerics_paths.py              # SmolLM2-135M, the model of the tests
    python benchmarks/numerics_paths.py model.gguf
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

TEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
        "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
        "Locally nicknamed La dame de fer, it was constructed as the centrepiece of the 1889 World's Fair.")

# name -> (environment, extra context keywords)
PATHS = {
    "default (again)": ({}, {}),
    "one thread": ({}, {"n_threads": 1}),
    "weights not repacked": ({"LLAMA_ARG_REPACK": "off"}, {}),
    "flash attention off": ({"LLAMA_ARG_FLASH_ATTN": "off"}, {}),
    "no op fusion": ({"GGML_CPU_DISABLE_FUSION": "1"}, {}),
    "no tiled K-quant matmul": ({"GGML_CPU_TILED_MM": "0"}, {}),
    "CI's second path": ({"LLAMA_ARG_FLASH_ATTN": "off", "LLAMA_ARG_REPACK": "off"}, {"n_threads": 1}),
}

CHILD = """
import sys, numpy as np, loopcpp
path, out, text, kw = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
with loopcpp.Model(path) as m, m.context(n_ctx=512, **kw) as ctx:
    np.save(out, ctx.eval(m.tokenize(text), logits="all"))
"""


def logits(model: str, env: dict, kw: dict, out: str) -> np.ndarray:
    subprocess.run([sys.executable, "-c", CHILD, model, out, TEXT, repr(kw)], check=True,
                   env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    return np.load(out).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m", help="a .gguf file or a catalog name")
    args = ap.parse_args()
    from loopcpp import catalog

    model = str(catalog.resolve_model(args.model))
    with tempfile.TemporaryDirectory() as d:
        base = logits(model, {}, {}, os.path.join(d, "base.npy"))
        print(f"{'path':28s} {'max |diff|':>10s} {'median':>8s} {'top-1 kept':>10s}   (logits' scale: max {np.abs(base).max():.1f})")
        for i, (name, (env, kw)) in enumerate(PATHS.items()):
            x = logits(model, env, kw, os.path.join(d, f"{i}.npy"))
            diff = np.abs(x - base)
            kept = (x.argmax(-1) == base.argmax(-1)).mean()
            print(f"{name:28s} {diff.max():10.3f} {np.median(diff):8.3f} {kept:10.1%}")


if __name__ == "__main__":
    main()
