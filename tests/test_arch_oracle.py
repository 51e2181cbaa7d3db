"""Every architecture that loops, checked against llama.cpp itself rather than a numpy model.

The oracle: one token at position 0, looped with the naive integrator and decode=full, attends
only to its own K/V in every evaluation. Its logits then equal the unmodified llama.cpp run on a
"self-merged" GGUF whose window layers are physically repeated K times (block mode: the window
K times; layer mode: each layer K times in place), with every per-layer parameter following its
layer. This checks the splicing of each architecture's graph (window, order, per-layer
hyperparameters, output trimming); integrators and cache policies do not depend on the
architecture and are checked against the numpy reference (test_loop_matrix.py).

Per architecture also: K = 1 is bit-identical to the unmodified model, every mode x integrator x
cache policy x decode mode runs without error or NaN, and the KV cache never grows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import archmodels
import loopcpp
import tinymodels
from conftest import EXACT, rel_err
from loopcpp.gguf_meta import duplicate_layers

ALL_ARCHS = tinymodels.ARCHS + archmodels.ARCHS
MOE_ARCHS = ("qwen3moe",) + archmodels.MOE
WINDOW = (2, 3)
PROMPT = [5, 17, 42, 9, 77, 120, 31]
TOL = 1e-4


@pytest.fixture(scope="module")
def arch_paths(tiny_paths, tmp_path_factory):
    d = tmp_path_factory.mktemp("archs")
    paths = dict(tiny_paths)
    paths.update({a: archmodels.write(a, d / f"tiny-{a}.gguf") for a in archmodels.ARCHS})
    return paths


def first_token_logits(path, tokens, loop=None) -> dict[int, np.ndarray]:
    """The logits of each token evaluated alone at position 0 (one model load for all)."""
    with loopcpp.Model(path) as m, m.context(n_ctx=64, loop=loop, **EXACT) as ctx:
        out = {}
        for token in tokens:
            ctx.reset()
            out[token] = ctx.eval([token])
        return out


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_the_builder_is_loop_capable(arch, arch_paths):
    with loopcpp.Model(arch_paths[arch]) as m:
        assert m.loop_supported


@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("mode", ["block", "layer"])
@pytest.mark.parametrize("k", [2, 3])
def test_naive_single_token_equals_the_self_merged_model(arch, mode, k, arch_paths, tmp_path):
    if mode == "layer" and arch in MOE_ARCHS:
        pytest.skip("layer mode reuses a MoE layer's first routing in its sub-steps (docs/looping.md); "
                    "a self-merged layer routes anew")
    s, e = WINDOW
    merged = tmp_path / f"{arch}-merged.gguf"
    duplicate_layers(arch_paths[arch], merged, s, e, k, progress=False, layerwise=mode == "layer")
    want = first_token_logits(merged, (7, 200))
    got = first_token_logits(arch_paths[arch], (7, 200), f"{s}:{e}x{k},{mode},naive,decode=full")
    for token in (7, 200):
        assert rel_err(got[token], want[token]) < TOL, (arch, mode, k, token, rel_err(got[token], want[token]))
    # and the oracle can fail: the natural model is far from the merged one
    assert rel_err(first_token_logits(arch_paths[arch], (7,))[7], want[7]) > 100 * TOL


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_k1_is_bit_identical_to_the_unmodified_model(arch, arch_paths):
    with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, **EXACT) as ctx:
        off = ctx.eval(PROMPT, logits="all")
        ctx.set_loop(f"{WINDOW[0]}:{WINDOW[1]}x1")
        assert np.array_equal(ctx.eval(PROMPT, logits="all"), off)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_variant_runs_finite_and_the_cache_never_grows(arch, arch_paths):
    with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, n_ubatch=4, n_batch=4, **EXACT) as ctx:
        ctx.eval(PROMPT)
        kv_size = len(ctx.kv_state())
        for mode, integ, kv, decode in itertools.product(("block", "layer"), ("naive", "euler", "rk"),
                                                         ("first", "last"), ("bypass", "full", "first:1")):
            ctx.set_loop(f"{WINDOW[0]}:{WINDOW[1]}x3,{mode},{integ},kv={kv},decode={decode}")
            prompt = ctx.eval(PROMPT, logits="all")
            assert len(ctx.kv_state()) == kv_size, (mode, integ, kv, decode)  # one entry per token
            out = [prompt] + [ctx.eval([t], logits="all") for t in (3, 4)]
            assert all(np.isfinite(o).all() for o in out), (mode, integ, kv, decode)


def test_the_architecture_page_is_current():
    import archtable

    assert archtable.PAGE.read_text() == archtable.render(), "docs/architectures.md is stale: run python tests/archtable.py"
    assert set(archtable.NOTES) == set(ALL_ARCHS)
