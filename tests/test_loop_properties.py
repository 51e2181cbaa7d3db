"""Properties of the loop engine beyond the reference matrix: K = 1 is the unmodified model,
the cache never grows, what each cache policy stores, bypass, configuration sources."""

import numpy as np
import pytest

import loopcpp
import reference
import tinymodels
from conftest import EXACT, graph_nodes_logged, rel_err

PROMPT = list(range(5, 17))
STEPS = [40, 41, 42]


def logits(model, loop, prompt=PROMPT, steps=STEPS, **kw):
    with model.context(n_ctx=256, loop=loop, **{**EXACT, **kw}) as ctx:
        out = [ctx.eval(prompt, logits="all")] + [ctx.eval([t], logits="all") for t in steps]
        return np.concatenate(out), ctx.kv_state()


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("spec", ["2:4x1", "0:5x1,layer,naive,kv=last,decode=full"])
def test_k1_is_bit_identical_to_loop_off(arch, spec, tiny_models):
    off, state_off = logits(tiny_models[arch], None)
    k1, state_k1 = logits(tiny_models[arch], spec)
    assert np.array_equal(off, k1)
    assert state_off == state_k1


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_k1_builds_the_same_graph_as_loop_off(arch, tiny_models, monkeypatch):
    """Node counts of the reserved prompt graph: K = 1 equals off; K = 3 is larger."""
    counts = {}
    for spec in ("", "2:4x1", "2:4x3"):
        monkeypatch.setenv("LOOPCPP_LOOP", spec)
        with tiny_models[arch].context(n_ctx=256):
            counts[spec] = graph_nodes_logged()
    assert counts["2:4x1"] == counts[""]
    assert counts["2:4x3"] > counts[""]


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("spec", ["2:4x5,block,naive,kv=first,decode=full", "1:4x3,layer,rk,kv=last,decode=full"])
def test_cache_holds_one_entry_per_token_and_layer(arch, spec, tiny_models):
    _, state_off = logits(tiny_models[arch], None)
    _, state_loop = logits(tiny_models[arch], spec)
    assert len(state_loop) == len(state_off)  # same cells, same layers: the cache never grows with K


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("mode", ["block", "layer"])
def test_kv_first_stores_the_unlooped_models_entries(arch, mode, tiny_models):
    """With the window ending at the last layer, every stored K/V comes from layers that see the
    unlooped inputs (before the window, or the window under kv=first): the serialized cache is
    byte for byte the unlooped one, though the logits differ."""
    off, state_off = logits(tiny_models[arch], None, steps=[])
    looped, state_first = logits(tiny_models[arch], f"3:5x3,{mode},rk,kv=first", steps=[])
    _, state_last = logits(tiny_models[arch], f"3:5x3,{mode},rk,kv=last", steps=[])
    assert state_first == state_off
    assert state_last != state_off
    assert rel_err(looped, off) > 1e-3


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_bypass_decode_steps_run_the_unlooped_layers(arch, tiny_models):
    """After a looped prompt with kv=first (window to the last layer, so the cache equals the
    unlooped one), bypassed decode steps give the unlooped model's logits exactly."""
    off, _ = logits(tiny_models[arch], None)
    looped, _ = logits(tiny_models[arch], "3:5x3,block,rk,kv=first,decode=bypass")
    n = len(PROMPT)
    assert rel_err(looped[:n], off[:n]) > 1e-3  # the prompt loops
    assert np.array_equal(looped[n:], off[n:])  # decode steps do not


def test_changing_the_loop_keeps_cached_tokens_when_asked(tiny_models, references):
    """clear=False: the cache keeps the K/V it was stored with and later ubatches use the new
    loop, exactly as a reference session whose loop changes between ubatches."""
    model, ref = tiny_models["qwen3"], references["qwen3"]
    with model.context(n_ctx=256, **EXACT) as ctx:
        ctx.set_loop("2:4x3,block,rk,kv=last,decode=full")
        a = ctx.eval(PROMPT, logits="all")
        ctx.set_loop("1:3x2,layer,euler,decode=full", clear=False)
        assert ctx.n_past == len(PROMPT)
        b = ctx.eval([40, 41, 42, 43], logits="all")
    s = reference.Session(ref, reference.Loop(2, 4, 3, "block", "rk", 0.5, "last", "full"))
    want_a = s.eval(PROMPT)
    s.loop = reference.Loop(1, 3, 2, "layer", "euler", decode="full")
    want_b = s.eval([40, 41, 42, 43])
    assert rel_err(a, want_a) < 1e-4 and rel_err(b, want_b) < 1e-4


def test_default_window_rule(tiny_models):
    assert tiny_models["llama"].default_loop.start == 1  # 6 layers: centre 2.5 nearest 0.47 * 6
    cfg = tiny_models["qwen3moe"].default_loop
    assert (cfg.start, cfg.end, cfg.steps, cfg.mode, cfg.integrator, cfg.beta, cfg.kv, cfg.decode) == (
        1, 4, 3, "layer", "rk", 0.5, "first", "bypass")
    assert tiny_models["gemma3"].default_loop.mode == "block"


@pytest.mark.parametrize("n_layer,window", [(36, (15, 18)), (28, (12, 15)), (30, (13, 16)), (18, (7, 10)), (2, (0, 1))])
def test_default_window_examples_of_the_contract(n_layer, window, tmp_path):
    path = tinymodels.write(tinymodels.TinySpec("llama", n_layer=n_layer, n_embd=16, n_head=2, n_head_kv=1,
                                                head_dim=8, n_ff=16), tmp_path / "m.gguf")
    with loopcpp.Model(path) as m:
        assert (m.default_loop.start, m.default_loop.end) == window


# --- configuration sources -----------------------------------------------------------------


def test_environment_variable_loops_without_code_changes(tiny_models, monkeypatch):
    monkeypatch.setenv("LOOPCPP_LOOP", "1:3x2,layer,euler")
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        assert str(ctx.loop) == "1:3x2,layer,euler,kv=first,decode=bypass"


def test_metadata_recipe_and_precedence(tmp_path, monkeypatch):
    path = tinymodels.write(tinymodels.TinySpec("qwen2"), tmp_path / "m.gguf", loop_recipe="2:3x2,euler")
    monkeypatch.delenv("LOOPCPP_LOOP", raising=False)
    with loopcpp.Model(path) as m:
        with m.context(n_ctx=64) as ctx:
            assert (ctx.loop.start, ctx.loop.steps, ctx.loop.integrator) == (2, 2, "euler")  # metadata
        monkeypatch.setenv("LOOPCPP_LOOP", "1:4x4")
        with m.context(n_ctx=64) as ctx:
            assert (ctx.loop.start, ctx.loop.steps) == (1, 4)  # environment over metadata
        with m.context(n_ctx=64, loop="0:1x5") as ctx:
            assert (ctx.loop.start, ctx.loop.steps) == (0, 5)  # API over environment
        with m.context(n_ctx=64, loop="off") as ctx:
            assert not ctx.loop.enabled


@pytest.mark.parametrize("spec,needle", [
    ("2:9x3", "outside the model"),
    ("4:2x3", "start > end"),
    ("2:4x0", "K = 0"),
    ("2:4x3,beta=2", "beta"),
    ("2:4x3,warp", "bad option \"warp\""),
    (",euler", "empty window"),
])
def test_an_environment_recipe_that_does_not_fit_is_ignored_with_a_warning(spec, needle, tiny_models, monkeypatch):
    """A global LOOPCPP_LOOP must not break every model it does not fit: the context is created
    unlooped and the log says why; an explicit API choice still works."""
    from loopcpp import _lib

    monkeypatch.setenv("LOOPCPP_LOOP", spec)
    _lib.log.clear()
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        assert not ctx.loop.enabled
    warning = next(l for l in _lib.log.lines if "ignoring the loop from LOOPCPP_LOOP" in l)
    assert needle in warning, warning
    with tiny_models["llama"].context(n_ctx=64, loop="1:2x2") as ctx:
        assert (ctx.loop.start, ctx.loop.steps) == (1, 2)


def test_a_metadata_recipe_that_does_not_fit_is_ignored(tmp_path, monkeypatch):
    from loopcpp import _lib

    path = tinymodels.write(tinymodels.TinySpec("qwen2"), tmp_path / "m.gguf", loop_recipe="20:23x3")
    with loopcpp.Model(path) as m:
        _lib.log.clear()
        with m.context(n_ctx=64) as ctx:
            assert not ctx.loop.enabled
        assert any("ignoring the loop from GGUF metadata loopcpp.loop" in l and "outside the model" in l
                   for l in _lib.log.lines)
        with m.context(n_ctx=64, loop="off") as ctx:
            assert not ctx.loop.enabled


def test_an_empty_environment_variable_means_no_recipe(tmp_path, monkeypatch):
    path = tinymodels.write(tinymodels.TinySpec("qwen2"), tmp_path / "m.gguf", loop_recipe="2:3x2,euler")
    monkeypatch.setenv("LOOPCPP_LOOP", "")
    with loopcpp.Model(path) as m, m.context(n_ctx=64) as ctx:
        assert not ctx.loop.enabled  # the metadata's recipe is not used either


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("mode", ["block", "layer"])
def test_rk_beta_limits(arch, mode, tiny_models):
    """beta = 0 is exactly euler; beta = 1 is exactly the unlooped model (docs/looping.md)."""
    euler, _ = logits(tiny_models[arch], f"2:4x3,{mode},euler,decode=full")
    rk0, _ = logits(tiny_models[arch], f"2:4x3,{mode},rk,beta=0,decode=full")
    off, _ = logits(tiny_models[arch], None)
    rk1, _ = logits(tiny_models[arch], f"2:4x3,{mode},rk,beta=1,decode=full")
    assert np.array_equal(rk0, euler)
    assert np.array_equal(rk1, off)
    assert rel_err(euler, off) > 1e-3


@pytest.mark.parametrize("spec", ["0:5x64,layer,rk,kv=first,decode=full", "0:5x64,block,naive,kv=last,decode=full,freeze"])
def test_largest_loops_build_and_run(spec, tiny_models):
    """K at its maximum over the whole model: the node budget grows with the loop (a too-small
    graph would hit ggml's node-count assert and kill the process)."""
    with tiny_models["qwen3moe"].context(n_ctx=64, n_ubatch=16, loop=spec) as ctx:
        assert ctx.loop.steps == 64
        prompt = ctx.eval(PROMPT, logits="all")
        step = ctx.eval([7], logits="last")
    if "rk" in spec:  # damped steps stay bounded; naive K = 64 may overflow, but must not crash
        assert np.isfinite(prompt).all() and np.isfinite(step).all()
    assert prompt.shape == (len(PROMPT), 288) and step.shape == (288,)


@pytest.fixture(scope="module")
def layer_features():
    """llama.cpp's per-layer input features (llama-ext.h: what eagle3 and MTP drafts read). They are
    C++ functions, so they are bound by their Itanium-mangled names (Linux, macOS)."""
    from cffi import FFI

    from loopcpp._paths import library_path

    ffi = FFI()
    ffi.cdef("void _Z30llama_set_embeddings_layer_inpP13llama_contextjb(void *, uint32_t, bool);"
             "float * _Z30llama_get_embeddings_layer_inpP13llama_contextj(void *, uint32_t);")
    lib = ffi.dlopen(str(library_path()))
    try:
        set_, get = (lib._Z30llama_set_embeddings_layer_inpP13llama_contextjb,
                     lib._Z30llama_get_embeddings_layer_inpP13llama_contextj)
    except AttributeError:
        pytest.skip("this libllama's C++ symbols are not Itanium-mangled")

    def run(model, loop, prompt=PROMPT):
        n_layer, n_embd = model._h.n_layer(), model._h.n_embd()
        with model.context(n_ctx=256, loop=loop, **EXACT) as ctx:
            for il in range(n_layer):
                set_(ctx._h.ptr, il, True)
            ctx.eval(prompt, logits="all")
            return [np.frombuffer(ffi.buffer(get(ctx._h.ptr, il), 4 * n_embd * len(prompt)), np.float32).copy()
                    for il in range(n_layer)]

    return run


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen3moe"])  # the tiny architectures whose builders set them
@pytest.mark.parametrize("mode", ["block", "layer"])
def test_layer_input_features_show_the_evaluation_the_cache_keeps(arch, mode, tiny_models, layer_features):
    """A window layer's input features come from its canonical evaluation, the one whose K/V the cache
    keeps: under kv=first the natural chain (the unlooped model's features, bit for bit), under kv=last
    the stash chain, which starts from the loop's output (the next layer's input)."""
    model = tiny_models[arch]
    off = layer_features(model, None)
    first = layer_features(model, f"2:3x3,{mode},rk,kv=first,decode=full")
    last = layer_features(model, f"2:3x3,{mode},rk,kv=last,decode=full")
    for il in range(4):  # before the window and in it: the natural chain
        assert np.array_equal(first[il], off[il]), il
    assert rel_err(first[4], off[4]) > 1e-3  # the loop's output
    for il in range(2):
        assert np.array_equal(last[il], off[il]), il
    assert np.array_equal(last[2], last[4])  # the stash chain's input is the loop's output
    assert np.array_equal(last[4], first[4])
    assert rel_err(last[3], off[3]) > 1e-3
