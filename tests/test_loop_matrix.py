"""llama.cpp's looped graph agrees with the numpy reference of docs/looping.md.

The whole matrix mode x integrator x cache policy x decode mode x K on every architecture, for
every position of a prompt split over two ubatches (n_ubatch = 8 < 11 tokens) and five decode
steps after it. test_wrong_variants_fail shows that the tolerance separates right from wrong.
"""

import itertools

import numpy as np
import pytest

import reference
import tinymodels
from conftest import EXACT, rel_err

TOL = 1e-4  # measured <= ~1e-5 (gemma3 ~1e-4 worst case with K = 5 naive); wrong variants >= 1e-2
WINDOW = (2, 4)  # mid-depth of the 6-layer tiny models
BETA = 0.3  # not the default, so a beta that is ignored is caught
N_UBATCH = 8
PROMPT = np.random.default_rng(11).integers(3, 288, 11).tolist()
STEPS = np.random.default_rng(12).integers(3, 288, 5).tolist()

MODES = ("block", "layer")
INTEGRATORS = ("naive", "euler", "rk")
KVS = ("first", "last")
DECODES = ("bypass", "full", "first:2")
KS = (1, 2, 3, 5)


def spec_string(start, end, k, mode, integrator, kv, decode, beta=BETA, freeze=False):
    s = f"{start}:{end}x{k},{mode},{integrator},kv={kv},decode={decode}"
    s += f",beta={beta}" if integrator == "rk" else ""
    return s + (",freeze" if freeze else "")


@pytest.fixture(scope="module")
def contexts(tiny_models):
    ctxs = {a: m.context(n_ctx=256, n_batch=64, n_ubatch=N_UBATCH, **EXACT) for a, m in tiny_models.items()}
    yield ctxs
    for c in ctxs.values():
        c.close()


def run_cpp(ctx, spec, prompt=PROMPT, steps=STEPS):
    ctx.set_loop(spec)  # also empties the cache
    out = [ctx.eval(prompt, logits="all")] + [ctx.eval([t], logits="all") for t in steps]
    return np.concatenate(out)


def run_ref(ref_model, loop, prompt=PROMPT, steps=STEPS):
    s = reference.Session(ref_model, loop, n_ubatch=N_UBATCH)
    return np.concatenate([s.eval(prompt)] + [s.eval([t]) for t in steps])


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("mode,integrator,kv,decode,k", list(itertools.product(MODES, INTEGRATORS, KVS, DECODES, KS)))
def test_loop_matches_reference(arch, mode, integrator, kv, decode, k, contexts, references):
    spec = spec_string(*WINDOW, k, mode, integrator, kv, decode)
    got = run_cpp(contexts[arch], spec)
    want = run_ref(references[arch], reference.Loop(*WINDOW, k, mode, integrator, BETA, kv, decode))
    assert rel_err(got, want) < TOL, spec


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kv", KVS)
def test_window_with_last_layer_trims_after_loop(arch, mode, kv, contexts, references):
    spec = spec_string(4, 5, 3, mode, "rk", kv, "full")
    want = run_ref(references[arch], reference.Loop(4, 5, 3, mode, "rk", BETA, kv, "full"))
    assert rel_err(run_cpp(contexts[arch], spec), want) < TOL


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_window_from_first_layer(arch, contexts, references):
    want = run_ref(references[arch], reference.Loop(0, 1, 3, "block", "euler", kv="last", decode="full"))
    assert rel_err(run_cpp(contexts[arch], "0:1x3,block,euler,kv=last,decode=full"), want) < TOL


@pytest.mark.parametrize("kv", KVS)
def test_block_mode_routing_freeze(kv, contexts, references):
    spec = spec_string(*WINDOW, 3, "block", "rk", kv, "full", freeze=True)
    want = run_ref(references["qwen3moe"], reference.Loop(*WINDOW, 3, "block", "rk", BETA, kv, "full", True))
    assert rel_err(run_cpp(contexts["qwen3moe"], spec), want) < TOL


WRONG_VARIANTS = [
    # (arch, what llama.cpp runs, a reference that differs in one respect)
    ("llama", "2:4x3,block,rk,beta=0.3", reference.Loop(2, 4, 3, "block", "euler")),
    ("llama", "2:4x3,block,rk,beta=0.3", reference.Loop(2, 4, 3, "block", "rk", beta=0.5)),
    ("qwen3", "2:4x3,layer,euler", reference.Loop(2, 4, 3, "block", "euler")),
    ("qwen2", "2:4x3,block,euler,kv=first", reference.Loop(2, 4, 3, "block", "euler", kv="last")),
    ("gemma3", "2:4x3,block,euler,kv=last", reference.Loop(2, 4, 3, "block", "euler", kv="first")),
    ("llama", "2:4x2,block,naive", reference.Loop(2, 4, 3, "block", "naive")),
    ("qwen3", "2:4x3,block,euler,decode=full", reference.Loop(2, 4, 3, "block", "euler", decode="bypass")),
    ("llama", "2:4x3,block,euler,decode=first:2", reference.Loop(2, 4, 3, "block", "euler", decode="first:3")),
    # a one-layer window: layer mode (routing fixed at the first evaluation) vs unfrozen routing
    ("qwen3moe", "3:3x3,layer,euler", reference.Loop(3, 3, 3, "block", "euler", freeze_routing=False)),
    ("qwen3moe", "2:4x3,block,euler,freeze", reference.Loop(2, 4, 3, "block", "euler", freeze_routing=False)),
]


@pytest.mark.parametrize("arch,spec,wrong", WRONG_VARIANTS)
def test_wrong_variants_fail(arch, spec, wrong, contexts, references):
    """Each reference here differs from what llama.cpp runs in one respect; the test's tolerance
    must reject it, so the matrix above would catch that bug in the C++."""
    assert rel_err(run_cpp(contexts[arch], spec), run_ref(references[arch], wrong)) > 10 * TOL


def test_one_layer_layer_mode_equals_frozen_block(contexts, references):
    """The counterpart of the routing variant above: with frozen routing the two agree."""
    want = run_ref(references["qwen3moe"], reference.Loop(3, 3, 3, "block", "euler", freeze_routing=True))
    assert rel_err(run_cpp(contexts["qwen3moe"], "3:3x3,layer,euler"), want) < TOL


@pytest.mark.parametrize("flash_attn", [True, False])
@pytest.mark.parametrize("arch,mode", [(a, m) for a in tinymodels.ARCHS for m in MODES if (a, m) != ("qwen3moe", "block")])
def test_default_cache_and_flash_attention_stay_close(arch, mode, flash_attn, tiny_models, references):
    """The default F16 cache and flash attention paths of the looped graph: agreement within what
    those settings cost unlooped, measured in the same run on the same context (looped errors
    measured at 0.4 to 2.6 times the unlooped ones; a wrong cache read moves logits by >= 1e-2,
    the loop itself by 0.1 to 1). MoE block mode is left out: without freeze its routing re-runs
    every pass, and F16 rounding flips top-k choices."""
    spec = f"1:5x5,{mode},euler,kv=last,decode=first:2"
    with tiny_models[arch].context(n_ctx=256, n_batch=64, n_ubatch=N_UBATCH, flash_attn=flash_attn) as ctx:
        noise = rel_err(run_cpp(ctx, "off"), run_ref(references[arch], None))
        got = run_cpp(ctx, spec)
    want = run_ref(references[arch], reference.Loop(1, 5, 5, mode, "euler", kv="last", decode="first:2"))
    assert 0 < noise and rel_err(got, want) < 10 * noise, (rel_err(got, want), noise)
