"""The Python API over the cffi bindings: tokenizer, evaluation, generation, lifetimes, errors."""

import numpy as np
import pytest

import loopcpp
from loopcpp import LoopConfig
from conftest import EXACT


def test_tokenize_round_trip(smollm2):
    text = "Hello, world! Ünïcödé and emoji 🚀 survive."
    tokens = smollm2.tokenize(text, add_special=False)
    assert len(tokens) > 5
    assert smollm2.detokenize(tokens) == text.encode()  # bytes, as token_to_piece and llama-cpp-python


def test_model_metadata(smollm2):
    assert (smollm2.arch, smollm2.n_layer, smollm2.n_embd, smollm2.n_head, smollm2.n_vocab) == ("llama", 30, 576, 9, 49152)
    assert smollm2.n_expert == 0
    assert smollm2.chat_template and "im_start" in smollm2.chat_template
    assert smollm2.metadata["general.architecture"] == "llama"


def test_chat_template_formats_messages(smollm2):
    text = smollm2.apply_chat_template([{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_generate_streams_tokens_and_stops_on_strings(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        tokens = list(ctx.generate("Counting: one, two, three,", max_tokens=20, temperature=0, ignore_eos=True))
    assert len(tokens) == 20 and all(isinstance(t, loopcpp.Token) for t in tokens)
    full = "".join(t.text for t in tokens)
    stop = full.strip()[:2]  # text the reply is certain to contain
    with smollm2.context(n_ctx=256) as ctx:  # a fresh context: the same batch shapes, the same tokens
        done = ctx.complete("Counting: one, two, three,", max_tokens=20, temperature=0, stop=[stop], ignore_eos=True)
    assert done.finish_reason == "stop"
    assert done.text == full[:full.index(stop)]


def test_seeded_sampling_is_reproducible(smollm2):
    runs = []
    for _ in range(2):
        with smollm2.context(n_ctx=256) as ctx:
            runs.append(ctx.complete("Once upon a time", max_tokens=12, temperature=1.0, seed=42, ignore_eos=True))
    assert runs[0].text == runs[1].text and runs[0].token_ids == runs[1].token_ids


def test_eval_logits_shapes_and_prefix_cache(tiny_models, references):
    """Logits of a prompt evaluated in two calls (the second reading the cache of the first)
    equal the numpy reference's; evaluating the second part without the cached prefix does not."""
    import reference
    from conftest import rel_err
    from test_reference import TOL

    prompt = [5, 6, 7, 8]
    want = reference.Session(references["llama"]).eval(prompt)
    with tiny_models["llama"].context(n_ctx=64, **EXACT) as ctx:
        first = ctx.eval(prompt[:3], logits="all")
        assert first.shape == (3, 288)
        last = ctx.eval(prompt[3:], logits="last")
        assert last.shape == (288,) and ctx.n_past == 4
        ctx.reset()
        without_prefix = ctx.eval(prompt[3:], logits="last")
    assert rel_err(first, want[:3]) < TOL and rel_err(last, want[3]) < TOL
    assert rel_err(without_prefix, want[3]) > 100 * TOL


def test_context_manager_frees_and_closed_context_raises(tiny_models):
    ctx = tiny_models["qwen2"].context(n_ctx=64)
    with ctx:
        ctx.eval([3, 4])
    assert ctx.closed
    with pytest.raises(ValueError, match="closed"):
        ctx.eval([5])


def test_closing_a_model_closes_its_contexts(tiny_paths):
    model = loopcpp.Model(tiny_paths["qwen3"])
    ctx = model.context(n_ctx=64)
    model.close()
    assert ctx.closed
    with pytest.raises(ValueError, match="closed"):
        ctx.eval([3])


# --- errors: nothing aborts the interpreter ----------------------------------------------


def test_missing_model_file():
    with pytest.raises(loopcpp.ModelLoadError, match="not found"):
        loopcpp.Model("/nonexistent/model.gguf")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(loopcpp.ModelLoadError, match="could not load"):
        loopcpp.Model(bad)


def test_unsupported_architecture(tmp_path):
    import gguf

    path = tmp_path / "alien.gguf"
    w = gguf.GGUFWriter(str(path), "alienformer")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(loopcpp.ModelLoadError, match="alienformer"):
        loopcpp.Model(path)


def test_full_context(tiny_models):
    with tiny_models["llama"].context(n_ctx=256) as ctx:
        with pytest.raises(loopcpp.ContextFullError, match="do not fit"):
            ctx.eval([5] * 300)
        assert ctx.n_past == 0


def test_tokens_outside_the_vocabulary(tiny_models):
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        with pytest.raises(ValueError, match="outside the vocabulary"):
            ctx.eval([3, 288])
        with pytest.raises(ValueError, match="outside the vocabulary"):
            ctx.eval([-1])


@pytest.mark.parametrize("kw,needle", [
    (dict(n_ctx=0), "n_ctx"), (dict(n_batch=-3), "n_batch"), (dict(type_k="q9"), "type_k"),
    (dict(loop="3:1x2"), "start > end"), (dict(loop=42), "LoopConfig"),
])
def test_bad_context_parameters(kw, needle, tiny_models):
    with pytest.raises((ValueError, loopcpp.LoopcppError), match=needle):
        tiny_models["llama"].context(**kw)


def test_bad_sampling_parameters(tiny_models):
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        with pytest.raises(ValueError, match="top_p"):
            ctx.complete("x", top_p=0.0)
        with pytest.raises(ValueError, match="max_tokens"):
            ctx.complete("x", max_tokens=-1)


@pytest.mark.parametrize("spec,needle", [
    ("2:9x3", "outside the model: layers are 0..5"),
    ("2:4x65", "K = 65 is out of range"),
    ("2:4x3,beta=1.5", "beta"),
    ("2:4x3,decode=sometimes", "bad option \"decode=sometimes\""),
    ("two:4x3", "bad window \"two:4x3\""),
])
def test_invalid_loops_raise_naming_the_bad_value(spec, needle, tiny_models):
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        ctx.set_loop("1:2x2")
        with pytest.raises(loopcpp.LoopConfigError, match=needle.replace("(", r"\(")):
            ctx.set_loop(spec)
        assert ctx.loop.start == 1  # a rejected loop leaves the previous one in place
        ctx.eval([3, 4, 5])  # and the context still works


def test_loop_config_round_trips_through_the_spec_grammar():
    for spec in ["15:18x3,block,rk,beta=0.5,kv=first,decode=bypass",
                 "12:15x4,block,naive,kv=last,decode=first:7,freeze",
                 "autox5,euler,kv=first,decode=full", "off"]:
        assert str(LoopConfig.parse(spec)) == spec
    cfg = LoopConfig.parse("15:18x3,layer,euler")
    assert (cfg.start, cfg.end, cfg.steps, cfg.mode, cfg.integrator) == (15, 18, 3, "layer", "euler")
    assert LoopConfig.parse("auto") == LoopConfig()


@pytest.mark.parametrize("kw,needle", [
    (dict(start=3), "both window ends"), (dict(start=4, end=2), "start > end"),
    (dict(steps=0), "steps"), (dict(mode="spiral"), "mode"), (dict(beta=float("nan")), "beta"),
    (dict(kv="middle"), "kv"), (dict(decode="first:x"), "decode"), (dict(integrator="rk4"), "integrator"),
])
def test_loop_config_validates_fields(kw, needle):
    with pytest.raises(loopcpp.LoopConfigError, match=needle):
        LoopConfig(**kw)


def test_failed_decode_raises_with_llama_cpps_reason(tiny_models):
    """Below the Python API's own checks: a batch llama.cpp refuses (positions that do not follow
    the cache) surfaces as DecodeError with the return code and llama.cpp's reason."""
    with tiny_models["llama"].context(n_ctx=64) as ctx:
        ctx.eval([3, 4, 5])
        with pytest.raises(loopcpp.DecodeError, match=r"returned -1: invalid input batch.*failed to initialize batch"):
            ctx._h.decode([6], 40, "last")
        assert ctx.eval([6], logits="last").shape == (288,)  # the context still works


def test_looped_generation_does_not_depend_on_what_the_cache_held(tiny_models):
    """A looped prompt ubatch depends on where it starts, so the prefix reuse stops at an earlier
    ubatch start: the same prompt twice, or in a fresh context, gives the same tokens."""
    prompt = list(range(5, 17))

    def tokens(ctx, p):
        return [t.id for t in ctx.generate(p, max_tokens=8, temperature=0)]

    with tiny_models["qwen3"].context(n_ctx=256, loop="2:4x3,decode=bypass") as ctx:
        a, b = tokens(ctx, prompt), tokens(ctx, prompt)
    with tiny_models["qwen3"].context(n_ctx=256, loop="2:4x3,decode=bypass") as fresh:
        assert tokens(fresh, prompt) == a
    assert a == b


def test_a_continuation_reads_the_cache_of_generated_tokens(tiny_models):
    """The limit of that promise (README): text appended after generated tokens reads their
    cache entries, computed one token at a time (unlooped under bypass), so with a loop it is not
    what one looped evaluation of the whole text gives. With the loop off the two agree up to
    the rounding of different batch shapes: that rounding, measured here, is the scale the
    looped difference must stand far above."""
    model = tiny_models["qwen3"]

    def continued_vs_whole(loop):
        with model.context(n_ctx=256, loop=loop) as ctx:
            list(ctx.generate(list(range(5, 17)), max_tokens=6, temperature=0, ignore_eos=True))
            history = list(ctx.tokens)
            continued = ctx.eval([40, 41, 42], logits="last")
        with model.context(n_ctx=256, loop=loop) as fresh:
            whole = fresh.eval(history + [40, 41, 42], logits="last")
        return float(np.abs(continued - whole).max())

    rounding, looped = continued_vs_whole("off"), continued_vs_whole("2:4x3,decode=bypass")
    assert looped > 100 * max(rounding, 1e-6), (looped, rounding)


def test_capture_copies_named_layer_outputs(tiny_models):
    """`capture` taps the graph: the unlooped output of layer 2, and in a naive block loop over
    layers 1..2 one copy per evaluation, the first of which is that same unlooped output (the first
    evaluation of the window is g(x0)), bit for bit."""
    model = tiny_models["llama"]
    tokens = [5, 9, 17, 33, 65]
    with model.context(n_ctx=64, capture=["l_out-2"], type_k="f32", type_v="f32", flash_attn=False) as ctx:
        ctx.eval(tokens, logits="none")
        (plain,) = ctx.captured["l_out-2"]
        ctx.set_loop("1:2x3,naive")
        ctx.eval(tokens, logits="none")
        looped = ctx.captured["l_out-2"]
    assert plain.shape == (5, model.n_embd)
    assert len(looped) == 3
    assert np.array_equal(looped[0], plain)
    assert not np.allclose(looped[2], plain)


def test_llama_cpps_environment_sets_the_open_defaults(tiny_paths, monkeypatch):
    """LLAMA_ARG_FLASH_ATTN and LLAMA_ARG_REPACK, read as llama.cpp's tools read them, decide what
    Context(flash_attn=None) and Model(repack=None) leave open; explicit arguments win."""
    prompt = [5, 9, 17, 33, 65, 3, 8]

    def logits(model, **kw):
        with model.context(n_ctx=64, **kw) as ctx:
            return ctx.eval(prompt, logits="all")

    with loopcpp.Model(tiny_paths["llama"]) as m:
        on, off = logits(m, flash_attn=True), logits(m, flash_attn=False)
        assert not np.array_equal(on, off)
        monkeypatch.setenv("LLAMA_ARG_FLASH_ATTN", "off")
        assert np.array_equal(logits(m), off) and np.array_equal(logits(m, flash_attn=True), on)
        monkeypatch.setenv("LLAMA_ARG_FLASH_ATTN", "sometimes")
        with pytest.raises(ValueError, match="LLAMA_ARG_FLASH_ATTN='sometimes' must be on, off or auto"):
            m.context(n_ctx=64)
    monkeypatch.setenv("LLAMA_ARG_REPACK", "maybe")
    with pytest.raises(ValueError, match="LLAMA_ARG_REPACK='maybe' must be on, off"):
        loopcpp.Model(tiny_paths["llama"])
    monkeypatch.setenv("LLAMA_ARG_REPACK", "off")
    loopcpp.Model(tiny_paths["llama"]).close()


def test_model_loading_reports_progress_and_can_be_cancelled(tiny_paths):
    seen = []
    with loopcpp.Model(tiny_paths["llama"], progress=seen.append) as m:
        assert m.n_layer == 6
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    calls = []
    with pytest.raises(loopcpp.LoadCancelledError, match="cancelled"):
        loopcpp.Model(tiny_paths["llama"], progress=lambda f: calls.append(f) or False)  # Cancel at once
    assert calls == [calls[0]]

    def broken(fraction):
        raise KeyError("the app's own bug")

    with pytest.raises(KeyError, match="own bug"):  # not swallowed, and not through llama.cpp's frames
        loopcpp.Model(tiny_paths["llama"], progress=broken)
    with pytest.raises(TypeError, match="progress"):
        loopcpp.Model(tiny_paths["llama"], progress=0.5)
    with loopcpp.Model(tiny_paths["llama"]) as m:  # and loading still works
        assert m.n_layer == 6
