"""Creating and freeing models and contexts, and setting and clearing loops, leaks nothing: the
process's resident memory stays flat over many cycles. The default run does a few hundred
cycles; `pytest -m slow` does the 10,000 that an app running for days would."""

import gc

import pytest

import loopcpp
from loopcpp import system


def rss_mib() -> float:
    """Resident memory after handing the allocator's free pages back (glibc's malloc_trim), so
    what is counted is what is in use, not what one allocator keeps cached."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the bound below still holds a real leak
        pass
    return system.rss_bytes() / 2**20


def cycles(path, n: int) -> list[float]:
    """RSS after each tenth of n cycles of: load the model, make a context, loop, evaluate, clear,
    free everything."""
    samples = []
    for i in range(n):
        with loopcpp.Model(path) as model, model.context(n_ctx=64, n_batch=16, n_ubatch=16) as ctx:
            ctx.set_loop("1:3x3" if i % 2 else "2:4x2,layer,kv=last")
            ctx.eval([5, 9, 17, 33], logits="last")
            ctx.set_loop("off")
        if (i + 1) % max(1, n // 10) == 0:
            gc.collect()
            samples.append(rss_mib())
    return samples


def check_flat(samples: list[float], slack_mib: float) -> None:
    """A leak grows memory in proportion to the cycles run: the second half of the run grows it
    as much as the first. Caches that settle grow it early, then stop. The first tenth warms up."""
    first, second = samples[5] - samples[1], samples[-1] - samples[5]
    assert min(first, second) < slack_mib / 2, \
        f"RSS grew in both halves of the run: {[round(s, 1) for s in samples]}"


def test_rss_stays_flat_over_hundreds_of_cycles(tiny_paths):
    check_flat(cycles(tiny_paths["llama"], 300), slack_mib=8)


@pytest.mark.slow
def test_rss_stays_flat_over_ten_thousand_cycles(tiny_paths):
    check_flat(cycles(tiny_paths["qwen3moe"], 10_000), slack_mib=16)
