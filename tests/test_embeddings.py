"""Embeddings: pooled vectors agree with the numpy reference (looped and unlooped), several texts
batch as separate sequences, and the loop changes the vectors as it changes any prompt."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import loopcpp
import reference
from loopcpp import system
from conftest import EXACT

TEXTS = ["hello world", "bonjour le monde, comment vas-tu", "x"]
LOOP = "2:4x3,rk,beta=0.3"


def ref_embedding(ref_model, tokens, loop=None, pooling="mean"):
    s = reference.Session(ref_model, loop, n_ubatch=10**6)
    s.eval(tokens)
    h = ref_model.normed(s.last_hidden)
    return h.mean(axis=0) if pooling == "mean" else h[-1]


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_embeddings_match_the_reference(arch, pooling, tiny_models, references):
    m, ref = tiny_models[arch], references[arch]
    loop = reference.Loop(2, 4, steps=3, integrator="rk", beta=0.3, decode="full")
    for spec, ref_loop in ((None, None), (LOOP, loop)):
        got = m.embed(TEXTS, pooling=pooling, normalize=False, loop=spec, **EXACT)
        for text, vec in zip(TEXTS, got):
            want = ref_embedding(ref, m.tokenize(text), ref_loop, pooling)
            assert np.abs(vec - want).max() < 1e-4 * max(1.0, np.abs(want).max()), (spec, text)


def test_looped_and_unlooped_vectors_differ_and_k1_is_exact(tiny_models):
    m = tiny_models["llama"]
    off = m.embed(TEXTS, **EXACT)
    looped = m.embed(TEXTS, loop=LOOP, **EXACT)
    k1 = m.embed(TEXTS, loop="2:4x1", **EXACT)
    assert np.array_equal(k1, off)
    # every text loops, the one-token text too (its sequence runs with decode=full)
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(off, looped))
    assert np.allclose(np.linalg.norm(looped, axis=1), 1.0, atol=1e-5)


def test_a_batch_equals_texts_one_at_a_time(tiny_models, references):
    """Texts embedded together (separate sequences of one batch) and one at a time both give
    the reference's looped vectors: the rows of other texts change nothing beyond rounding."""
    m = tiny_models["qwen2"]
    loop = reference.Loop(2, 4, steps=3, integrator="rk", beta=0.3, decode="full")
    batch = m.embed(TEXTS, loop=LOOP, normalize=False, **EXACT)
    for text, vec in zip(TEXTS, batch):
        want = ref_embedding(references["qwen2"], m.tokenize(text), loop)
        alone = m.embed(text, loop=LOOP, normalize=False, **EXACT)
        for got in (vec, alone):
            assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max()), text


def test_embedding_context_reuse_and_errors(tiny_models):
    m = tiny_models["llama"]
    with m.context(embeddings=True, n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=4, **EXACT) as ctx:
        a = ctx.embed(TEXTS)
        assert a.shape == (3, m.n_embd)
        assert np.array_equal(ctx.embed(TEXTS), a)  # the cache is emptied between calls
        with pytest.raises(ValueError, match="does not generate"):
            ctx.complete("x", max_tokens=1)
        with pytest.raises(loopcpp.ContextFullError, match="embeds at most 64"):
            ctx.embed("word " * 200)
    with m.context(n_ctx=32) as ctx:
        with pytest.raises(ValueError, match="embeddings=True"):
            ctx.embed("x")
    with pytest.raises(ValueError, match="multiple of n_seq_max"):
        m.context(embeddings=True, n_ubatch=100, n_seq_max=3)
    with pytest.raises(ValueError, match="pooling"):
        m.context(pooling="mean")


def test_model_embed_keeps_its_context(tiny_models):
    """Model.embed() makes its context once and reuses it; a call that needs more room or other
    settings makes it again (the old one closed)."""
    m = tiny_models["llama"]
    first = m.embed(TEXTS, **EXACT)
    ctx = m._embedder
    assert np.allclose(m.embed(TEXTS[1], **EXACT), first[1], rtol=1e-4, atol=1e-6)
    assert np.array_equal(m.embed(TEXTS, **EXACT), first) and m._embedder is ctx
    long_text = " ".join(["word"] * 300)
    assert len(m.tokenize(long_text)) > ctx.n_ctx
    m.embed(long_text, **EXACT)
    assert m._embedder is not ctx and ctx.closed and m._embedder.n_ctx > 512
    grown = m._embedder
    m.embed(TEXTS, pooling="last", **EXACT)
    assert m._embedder is not grown and grown.closed


def test_llama_cpp_log_reaches_python_logging(tiny_paths, caplog):
    with caplog.at_level(logging.DEBUG, logger="loopcpp"):
        with loopcpp.Model(tiny_paths["llama"]) as m:
            m.context(n_ctx=32).close()
    lines = [r.getMessage() for r in caplog.records if r.name == "loopcpp"]
    assert any("llama_model_loader" in line for line in lines)
    assert any("llama_context" in line for line in lines)
    assert all("\n" not in line for line in lines)  # one record per line


def test_nothing_is_logged_without_a_handler(tiny_paths, capfd):
    with loopcpp.Model(tiny_paths["llama"]) as m:
        m.context(n_ctx=32).close()
    assert "llama_model_loader" not in capfd.readouterr().err


def test_machine_defaults():
    assert 1 <= system.physical_cores() <= system._usable_cpus()
    assert system.default_gpu_layers() == (-1 if system.gpu_offload_supported() else 0)
