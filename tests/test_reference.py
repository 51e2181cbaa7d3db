"""The unlooped forward pass of every architecture agrees with the numpy reference."""

import numpy as np
import pytest

import reference
import tinymodels
from conftest import EXACT, rel_err

# float32 llama.cpp vs float64 numpy: measured ~1e-6 (gemma3 ~3e-5, float16 GELU table); a wrong
# rope, norm or mask moves logits by > 1e-2.
TOL = 1e-4


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_prompt_and_decode_match_reference(arch, tiny_models, references):
    rng = np.random.default_rng(7)
    prompt = rng.integers(3, 288, 12).tolist()
    steps = rng.integers(3, 288, 6).tolist()
    with tiny_models[arch].context(n_ctx=256, **EXACT) as ctx:
        got = [ctx.eval(prompt, logits="all")] + [ctx.eval([t], logits="all") for t in steps]
    session = reference.Session(references[arch])
    want = [session.eval(prompt)] + [session.eval([t]) for t in steps]
    assert rel_err(np.concatenate(got), np.concatenate(want)) < TOL


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_prompt_split_over_ubatches_matches_reference(arch, tiny_models, references):
    prompt = np.random.default_rng(8).integers(3, 288, 21).tolist()
    with tiny_models[arch].context(n_ctx=256, n_batch=64, n_ubatch=8, **EXACT) as ctx:
        got = ctx.eval(prompt, logits="all")
    want = reference.Session(references[arch], n_ubatch=8).eval(prompt)
    assert rel_err(got, want) < TOL


def test_reference_detects_a_wrong_model(tiny_models, references):
    """The tolerance is meaningful: the llama reference run on the qwen2 weights is far off."""
    prompt = list(range(3, 15))
    with tiny_models["qwen2"].context(n_ctx=256, **EXACT) as ctx:
        got = ctx.eval(prompt, logits="all")
    assert rel_err(got, reference.Session(references["llama"]).eval(prompt)) > 100 * TOL
