"""No call order kills the host process: use after close, contexts outliving their model,
interleaved generations, two threads on one context. Each bad order runs in a subprocess: a
process killed by a signal fails the test; a clear exception passes."""

import subprocess
import sys
import textwrap
import logging
import threading

import numpy as np
import pytest

import loopcpp
from loopcpp import _lib

SETUP = """
import loopcpp
m = loopcpp.Model({path!r})
"""

CASES = {
    "tokenize after Model.close": "m.close(); m.tokenize('hi')",
    "detokenize after Model.close": "m.close(); m.detokenize([5])",
    "Model.context after Model.close": "m.close(); m.context(n_ctx=32)",
    "Context(model) after Model.close": "m.close(); loopcpp.Context(m, n_ctx=32)",
    "ctx.loop after ctx.close": "c = m.context(n_ctx=32); c.close(); c.loop",
    "ctx.kv_state after ctx.close": "c = m.context(n_ctx=32); c.close(); c.kv_state()",
    "ctx.generate after ctx.close": "c = m.context(n_ctx=32); c.close(); list(c.generate([5, 6], max_tokens=2))",
    "ctx.reset after ctx.close": "c = m.context(n_ctx=32); c.close(); c.reset()",
    "ctx.set_loop after ctx.close": "c = m.context(n_ctx=32); c.close(); c.set_loop('1:2x2')",
    "eval on a direct Context after Model.close": "c = loopcpp.Context(m, n_ctx=32); m.close(); c.eval([5, 6])",
    "a generator resumed after ctx.close": (
        "c = m.context(n_ctx=32); g = c.generate([5, 6], max_tokens=8); next(g); c.close(); list(g)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_use_after_close_raises_instead_of_crashing(case, tiny_paths):
    code = SETUP.format(path=str(tiny_paths["llama"])) + CASES[case]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, f"{case}: exit {r.returncode} (negative: killed by a signal)\n{r.stderr[-1500:]}"
    assert "loopcpp.errors.ClosedError: this " in r.stderr and "is closed" in r.stderr, r.stderr[-800:]


def test_interleaved_generations_on_one_context_are_refused(tiny_models):
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        first = ctx.generate([5, 6, 7], max_tokens=4, temperature=0)
        next(first)
        with pytest.raises(loopcpp.BusyError, match="another generation is in progress"):
            next(ctx.generate([9, 10], max_tokens=4, temperature=0))
        with pytest.raises(loopcpp.BusyError, match=r"eval\(\) while a generation is in progress"):
            ctx.eval([11])
        rest = list(first)  # the first one is unharmed
        assert len(rest) == 3
        ctx.eval([11])  # and the context is free again


def test_a_generation_closed_early_frees_the_context(tiny_models):
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        g = ctx.generate([5, 6, 7], max_tokens=4, temperature=0)
        next(g)
        g.close()
        assert ctx.eval([8], logits="last").shape == (tiny_models["llama"].n_vocab,)


def test_two_threads_on_one_context_are_serialised(tiny_models):
    """perplexity() resets the cache and evaluates a text as one call; from two threads at once
    the calls take turns, and every result equals the one-thread result (interleaved, each would
    write into the other's cache)."""
    model = tiny_models["llama"]
    texts = [[5, 9, 17, 33, 8, 4], [7, 3, 11, 13, 2, 40, 41]]
    with model.context(n_ctx=64, loop="1:3x3") as ctx:
        want = [ctx.perplexity(t) for t in texts]
        got: dict[int, list] = {0: [], 1: []}
        errors = []

        def work(i):
            try:
                for _ in range(30):
                    got[i].append(ctx.perplexity(texts[i]))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert got[0] == [want[0]] * 30 and got[1] == [want[1]] * 30


def test_a_threads_error_message_never_quotes_another_threads_log():
    log = _lib._Log(logging.getLogger("loopcpp-test-silent"))
    ready = threading.Barrier(2)
    seen = {}

    def work(name):
        ready.wait()
        for i in range(200):
            log.write(4, f"{name} error {i}\n")
        seen[name] = log.recent_errors(5)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "alpha" in seen["alpha"] and "beta" not in seen["alpha"]
    assert "beta" in seen["beta"] and "alpha" not in seen["beta"]
