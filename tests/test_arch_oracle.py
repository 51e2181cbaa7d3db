"""Every architecture that loops, checked against llama.cpp itself rather than a numpy model.

The oracle: a prompt evaluated in one ubatch from an empty cache, looped with the naive
integrator, attends in every evaluation to that evaluation's own K/V only (docs/looping.md,
"Attention inside an evaluation"). Its logits then equal the unmodified llama.cpp run on a
"self-merged" GGUF whose window layers are physically repeated K times (block mode: the window
K times; layer mode: each layer K times in place), with every per-layer parameter following its
layer. This checks the splicing of each architecture's graph (window, order, per-layer
hyperparameters such as sliding windows, RoPE bases and head counts, output trimming) at every
position of the prompt; integrators and cache policies do not depend on the architecture and
are checked against the numpy reference (test_loop_matrix.py).

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
from loopcpp.gguf_meta import INDEX_PERIODS, copy_gguf, duplicate_layers

ALL_ARCHS = tinymodels.ARCHS + archmodels.ARCHS
MOE_ARCHS = ("qwen3moe",) + archmodels.MOE
WINDOW = (2, 3)
PROMPT = [5, 17, 42, 9, 77, 120, 31]
ORACLE_PROMPT = [7, 200, 5, 17, 42, 9, 77, 120, 31, 64, 3, 250]  # longer than the tiny sliding window (5)
TOL = 1e-4


@pytest.fixture(scope="module")
def arch_paths(tiny_paths, tmp_path_factory):
    d = tmp_path_factory.mktemp("archs")
    paths = dict(tiny_paths)
    # gemma3 with distinct RoPE bases for its local and global layers, so the oracle sees which one a layer uses
    paths["gemma3"] = tinymodels.write(tinymodels.TinySpec("gemma3", rope_base_swa=1000.0), d / "tiny-gemma3.gguf")
    paths.update({a: archmodels.write(a, d / f"tiny-{a}.gguf") for a in archmodels.ARCHS})
    return paths


def prompt_logits(path, loop=None, flash_attn=False) -> np.ndarray:
    """The logits of every position of ORACLE_PROMPT, evaluated in one ubatch from an empty cache."""
    with loopcpp.Model(path) as m, m.context(n_ctx=64, loop=loop, **{**EXACT, "flash_attn": flash_attn}) as ctx:
        return archmodels.comparable(m.arch, ctx.eval(ORACLE_PROMPT, logits="all"))


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_the_builder_is_loop_capable(arch, arch_paths):
    with loopcpp.Model(arch_paths[arch]) as m:
        assert m.loop_supported


# Architectures whose layers depend on the layer count itself, so that a deeper self-merged file is
# another model: the loop keeps the trained depth's constants, the merge cannot.
DEPTH_DEPENDENT = {
    "minicpm3": "scales every residual branch by 1.4 / sqrt(n_layer) (no GGUF key states it)",
}


# Where WINDOW holds the layers whose cache KV-sharing layers read (gemma4: layers 4 and 5 read
# layers 2 and 3), the loop's readers read the cache policy's K/V and a self-merged file's the
# last copy's (test_layers_that_share_kv_read_what_the_cache_keeps covers that): the oracle runs a
# window of the sharing layers instead.
KV_SHARING_WINDOWS = {"gemma4": (4, 5)}


def oracle_window(arch: str) -> tuple[int, int]:
    """WINDOW, or for an architecture that picks some per-layer settings by index period (no GGUF
    key states them per layer), a window as wide as the period: every copy then keeps them."""
    period = INDEX_PERIODS.get(arch)
    return (1, period) if period else KV_SHARING_WINDOWS.get(arch, WINDOW)


@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("mode", ["block", "layer"])
@pytest.mark.parametrize("k", [2, 3])
def test_naive_prompt_equals_the_self_merged_model(arch, mode, k, arch_paths, tmp_path):
    if mode == "layer" and arch in MOE_ARCHS:
        pytest.skip("layer mode reuses a MoE layer's first routing in its sub-steps (docs/looping.md); "
                    "a self-merged layer routes anew")
    if arch in DEPTH_DEPENDENT:
        pytest.skip(f"{arch} {DEPTH_DEPENDENT[arch]}: a self-merged file is another model")
    if mode == "layer" and arch in INDEX_PERIODS:
        pytest.skip(f"{arch} picks RoPE per layer by index period; layer order moves layers off it")
    s, e = oracle_window(arch)
    merged = tmp_path / f"{arch}-merged.gguf"
    duplicate_layers(arch_paths[arch], merged, s, e, k, progress=False, layerwise=mode == "layer")
    want = prompt_logits(merged)
    got = prompt_logits(arch_paths[arch], f"{s}:{e}x{k},{mode},naive,decode=full")
    errs = [rel_err(g, w) for g, w in zip(got, want)]
    assert max(errs) < TOL, (arch, mode, k, errs)
    # and the oracle can fail: the natural model is far from the merged one
    assert rel_err(prompt_logits(arch_paths[arch])[0], want[0]) > 100 * TOL


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_a_window_holding_the_last_layer_picks_the_output_rows_once(arch, arch_paths, tmp_path):
    """With only the last position's logits asked for, llama.cpp's last layer keeps just that
    row; a window holding it runs every evaluation on all rows and picks the row once after the
    loop (a builder that picks rows after its output norm instead passes no rows to the stack).
    Compared with the self-merged model, or, where that is another model, with the same loop's
    logits of every position."""
    with loopcpp.Model(arch_paths[arch]) as m:
        n = m.n_layer
    e = n - 1
    s = e - INDEX_PERIODS[arch] + 1 if arch in INDEX_PERIODS else e - 1
    loop = f"{s}:{e}x2,block,naive,decode=full"
    if arch in DEPTH_DEPENDENT:
        with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, loop=loop, **EXACT) as ctx:
            want = archmodels.comparable(arch, ctx.eval(ORACLE_PROMPT, logits="all"))[-1]
    else:
        merged = tmp_path / f"{arch}-merged.gguf"
        duplicate_layers(arch_paths[arch], merged, s, e, 2, progress=False)
        with loopcpp.Model(merged) as m, m.context(n_ctx=64, **EXACT) as ctx:
            want = archmodels.comparable(arch, ctx.eval(ORACLE_PROMPT))
    with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, loop=loop, **EXACT) as ctx:
        got = archmodels.comparable(arch, ctx.eval(ORACLE_PROMPT))
    assert got.shape == want.shape == (m.n_vocab,)
    assert rel_err(got, want) < TOL, (arch, rel_err(got, want))


@pytest.mark.parametrize("k", [2, 3])
def test_sparse_attention_that_runs_only_with_flash_attention_equals_the_self_merged_model(k, arch_paths, tmp_path):
    """minimax-m3's sparse block attention (an indexer with its own cache picks the key blocks)
    runs only with flash attention; without it the model attends densely. Looped on the sparse
    path, it equals the self-merged model too, and the two paths differ."""
    merged = tmp_path / "minimax-m3-merged.gguf"
    duplicate_layers(arch_paths["minimax-m3"], merged, *WINDOW, k, progress=False)
    loop = f"{WINDOW[0]}:{WINDOW[1]}x{k},block,naive,decode=full"
    sparse = prompt_logits(arch_paths["minimax-m3"], loop, flash_attn=True)
    assert max(rel_err(a, b) for a, b in zip(sparse, prompt_logits(merged, flash_attn=True))) < TOL
    assert rel_err(sparse[-1], prompt_logits(arch_paths["minimax-m3"], loop)[-1]) > 100 * TOL


def test_layers_that_share_kv_read_what_the_cache_keeps(arch_paths, tmp_path, monkeypatch):
    """gemma4's last layers attend with the K/V that an earlier layer stored (here 4 reads layer
    2's cache, 5 reads layer 3's). A window holding those sources stores one K/V per token for
    them, the cache policy's, and the sharing layers read that, as later tokens do. So in one
    ubatch from an empty cache (where the window's own evaluations attend to their own K/V) the
    policy changes the logits exactly where a layer after the window reads the window's cache:
    with the sources in the window, not with a window before them, and not without sharing."""
    def policy_difference(path, window):
        first, last = (prompt_logits(path, f"{window}x3,block,euler,kv={kv},decode=full") for kv in ("first", "last"))
        return max(rel_err(a, b) for a, b in zip(first, last))

    assert policy_difference(arch_paths["gemma4"], "2:3") > 1e-2
    assert policy_difference(arch_paths["gemma4"], "0:1") == 0.0
    monkeypatch.setitem(archmodels.GEMMA4, "shared_kv", 0)
    assert policy_difference(archmodels.write("gemma4", tmp_path / "unshared.gguf"), "2:3") == 0.0


@pytest.mark.parametrize("window, shared", [((4, 5), 4), ((5, 5), 3), ((0, 1), 2), ((2, 3), 2),
                                            ((3, 4), None), ((3, 3), None)])
def test_a_self_merge_counts_the_copies_of_kv_sharing_layers(window, shared, arch_paths, tmp_path):
    """gemma4 states its KV-sharing layers (4, 5, reading layers 2 and 3) as a count of last
    layers: in a merged file every copy of such a layer counts (x2: the window's layers appear
    twice). A window that moves the sharing layers or their sources away from the positions
    llama.cpp reads them at is refused: no count could state it."""
    import gguf

    merged = tmp_path / "merged.gguf"
    if shared is None:
        with pytest.raises(ValueError, match="shared_kv_layers = 2: layers 4.. read the cache"):
            duplicate_layers(arch_paths["gemma4"], merged, *window, 2, progress=False)
        return
    duplicate_layers(arch_paths["gemma4"], merged, *window, 2, progress=False)
    field = gguf.GGUFReader(str(merged)).get_field("gemma4.attention.shared_kv_layers")
    assert field.contents() == shared


def test_glm_dsa_refuses_a_window_whose_indexer_top_k_a_later_shared_layer_reuses(arch_paths, tmp_path, monkeypatch):
    """GLM-5.2's shared indexer layers reuse the top-k selection of the full indexer layer before
    them: state outside the residual. A window holding a full layer that a shared one follows is
    refused with a clean window suggested; in GLM-5's all-full layout the same window loops and
    equals the self-merged model."""
    with loopcpp.Model(arch_paths["glm-dsa"]) as m, m.context(n_ctx=64) as ctx:  # layers 1 full, 2 shared
        with pytest.raises(loopcpp.LoopConfigError, match=r"layer 1 is a full indexer layer .* shared indexer layer 2.*"
                                                          r"e\.g\. 2:3"):
            ctx.set_loop("1:2x2")
        with pytest.raises(loopcpp.LoopConfigError, match="layer 1 is a full indexer layer"):
            ctx.set_loop("auto")  # the default window of 6 layers is 1:4
    # GLM-5.2's own pattern (full, then every fourth) leaves no clean window as wide as the default
    # one: the suggestion narrows it
    monkeypatch.setitem(archmodels.GLM_DSA, "full", [1, 1, 1, 0, 1, 0])
    with loopcpp.Model(archmodels.write("glm-dsa", tmp_path / "glm52.gguf")) as m, m.context(n_ctx=64) as ctx:
        with pytest.raises(loopcpp.LoopConfigError, match=r"window 1:4 cannot loop .* layer 2 is .* e\.g\. 0:1$"):
            ctx.set_loop("auto")
    monkeypatch.setitem(archmodels.GLM_DSA, "full", [1] * 6)
    all_full = archmodels.write("glm-dsa", tmp_path / "glm5.gguf")
    merged = tmp_path / "glm5-merged.gguf"
    duplicate_layers(all_full, merged, 1, 2, 2, progress=False)
    got = prompt_logits(all_full, "1:2x2,block,naive,decode=full")
    assert max(rel_err(g, w) for g, w in zip(got, prompt_logits(merged))) < TOL


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_layer_mode_freezes_the_routing_of_every_moe_architecture(arch, arch_paths):
    """Layer mode routes a MoE layer once and reuses its experts and weights in later sub-steps.
    The hook sits after every routing variant in llama.cpp's build_moe_ffn (softmax, sigmoid,
    group-limited, selection bias, normalisation, scale; llama4 applies the reused weights before
    its FFN), so a reused routing leaves the later routers out of the graph, and a one-layer window
    in layer mode equals block mode with `freeze`."""
    moe_layer = 3  # routes in every MoE tiny model (llama4: every other layer; dense-first ones: from layer 1)
    window = f"{moe_layer}:{moe_layer}x3"

    def nodes(loop):
        with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, loop=loop, count_nodes=True, **EXACT) as ctx:
            ctx.eval(ORACLE_PROMPT)
            return ctx.graph_nodes

    assert nodes(f"{window},block,naive,freeze") < nodes(f"{window},block,naive"), "no router was left out"
    frozen = prompt_logits(arch_paths[arch], f"{window},layer,naive,decode=full")
    frozen_block = prompt_logits(arch_paths[arch], f"{window},block,naive,decode=full,freeze")
    assert max(rel_err(a, b) for a, b in zip(frozen, frozen_block)) < TOL


@pytest.mark.parametrize("arch, window, k", [("gemma2", (2, 2), 2), ("gemma3", (2, 3), 2), ("smollm3", (2, 3), 2)])
def test_the_oracle_sees_per_layer_attention_settings(arch, window, k, arch_paths, tmp_path):
    """A merged model whose layers took the settings of their new index (sliding window, RoPE)
    agrees with the loop at position 0 and nowhere after it: the prompt oracle checks those
    settings where a single token could not."""
    s, e = window
    layers = list(range(s)) + list(range(s, e + 1)) * k + list(range(e + 1, 6))
    by_index = tmp_path / "by-index.gguf"
    copy_gguf(arch_paths[arch], by_index, progress=False, layers=layers)  # patterns not rewritten
    want = prompt_logits(by_index)
    got = prompt_logits(arch_paths[arch], f"{s}:{e}x{k},block,naive,decode=full")
    assert rel_err(got[0], want[0]) < TOL
    assert min(rel_err(g, w) for g, w in zip(got[-4:], want[-4:])) > 100 * TOL


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_k1_is_bit_identical_to_the_unmodified_model(arch, arch_paths):
    with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, **EXACT) as ctx:
        off = ctx.eval(PROMPT, logits="all")
        ctx.set_loop(f"{WINDOW[0]}:{WINDOW[1]}x1")
        assert np.array_equal(ctx.eval(PROMPT, logits="all"), off)


@pytest.mark.parametrize("arch", ["llama", "gemma3n", "hy_v4"])
@pytest.mark.parametrize("mode", ["block", "layer"])
def test_a_residual_of_several_streams_picks_each_sequences_rows(arch, mode, arch_paths):
    """A ubatch mixing sequences that loop with ones that do not picks rows per token; gemma3n
    ([n_embd, n_tokens, 4]) and hy_v4 ([n_embd, 2, n_tokens]) carry several residual streams, so
    the pick moves their token dimension (llama: the plain [n_embd, n_tokens] case). Each sequence
    gives what it gives alone, up to the rounding of other batch shapes: far below what a wrong
    pick would give (the other chain, as far off as the loop's effect, measured here unlooped;
    rounding measured at 1e-6 to 1.2e-4, effects at 0.17 to 1.7)."""
    from test_loop_sequences import MIXED, run_cpp

    def alone(s):
        return [[r for r in ub if r[1] == [s]] for ub in MIXED if [s] in [r[1] for r in ub]]

    spec = f"2:3x3,{mode},rk,beta=0.3,decode=bypass"
    with loopcpp.Model(arch_paths[arch]) as m, m.context(n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=4, **EXACT) as ctx:
        together = run_cpp(ctx, spec, MIXED)
        looped = {s: run_cpp(ctx, spec, alone(s)) for s in (0, 1, 2)}
        unlooped = {s: run_cpp(ctx, "off", alone(s)) for s in (0, 1, 2)}
    for s in (0, 1, 2):
        rows = [np.stack([g[i] for i, r in enumerate(ub) if r[1] == [s]]) for g, ub in zip(together, MIXED)
                if [s] in [r[1] for r in ub]]
        assert len(rows) == len(looped[s])
        effect = max(rel_err(a, o) for a, o in zip(looped[s], unlooped[s]))
        for t, a in zip(rows, looped[s]):
            assert rel_err(t, a) < 0.01 * effect, (arch, mode, s, rel_err(t, a), effect)


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
            assert all(np.isfinite(archmodels.comparable(arch, o)).all() for o in out), (mode, integ, kv, decode)


def test_the_architecture_page_is_current():
    import archtable

    assert archtable.PAGE.read_text() == archtable.render(), "docs/architectures.md is stale: run python tests/archtable.py"
    assert set(archtable.NOTES) == set(ALL_ARCHS)
