"""Layer mode's routing replay (docs/looping.md, "MoE"), checked per router call.

Layer mode routes each MoE layer once: the first evaluation of a window layer records its experts
and weights, and the later evaluations replay them. grovemoe routes twice in one layer (its main
experts, then its "chunk" experts from the same router logits), so a replay keyed by layer alone
hands the main experts the chunk routing. The oracle runs MoE models in block order only; here the
graph's own tensors are captured (each evaluation's FFN input and output, the first evaluation's
routing of each call) and every replayed evaluation's expert outputs are recomputed in numpy from
its own input and its own call's first routing.
"""

from __future__ import annotations

import numpy as np
import pytest

import archmodels
import loopcpp
from conftest import EXACT, rel_err

IL = 2  # a one-layer window: no shadow or stash evaluations, just K evaluations of layer IL
K = 3


def silu(x):
    return x / (1.0 + np.exp(-x))


def experts(w, kind, x, ids, gates):
    """Σ_e gate_e · down_e(silu(gate_e x) * up_e x) over each row's experts (build_moe_ffn, SiLU)."""
    gate, up, down = (w[f"blk.{IL}.ffn_{n}_{kind}.weight"] for n in ("gate", "up", "down"))
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for e, g in zip(ids[t], gates[t]):
            out[t] += g * (down[e] @ (silu(gate[e] @ x[t]) * (up[e] @ x[t])))
    return out


def top_k(argsort, n_tokens, k):
    """The experts a router call picked: the first k of its descending argsort (an I32 tensor,
    captured as float32 bytes)."""
    return argsort.view(np.int32).reshape(n_tokens, -1)[:, :k]


@pytest.fixture(scope="module")
def grovemoe(tmp_path_factory):
    import gguf

    path = archmodels.write("grovemoe", tmp_path_factory.mktemp("grovemoe") / "grovemoe.gguf")
    reader = gguf.GGUFReader(str(path))
    weights = {t.name: np.asarray(t.data, np.float64) for t in reader.tensors}
    group = int(reader.get_field("grovemoe.experts_per_group").contents())
    return path, weights, group


def test_grovemoe_layer_mode_replays_each_calls_own_routing(grovemoe):
    path, w, group = grovemoe
    names = ["ffn_norm", "ffn_moe_argsort", "ffn_moe_weights_norm", "ffn_moe_weights_scaled", "ffn_moe_out",
             "ffn_adj_moe_out"]
    prompt = list(range(5, 17))
    with loopcpp.Model(path) as m, m.context(n_ctx=64, capture=[f"{n}-{IL}" for n in names], **EXACT) as ctx:
        ctx.set_loop(f"{IL}:{IL}x{K},layer,euler")
        ctx.eval(prompt, logits="none")
        got = {n: ctx.captured.get(f"{n}-{IL}", []) for n in names}
    n = len(prompt)
    # K evaluations of the layer; the router ran once per call, in the first (main, then chunk)
    assert len(got["ffn_norm"]) == len(got["ffn_moe_out"]) == len(got["ffn_adj_moe_out"]) == K
    final = got["ffn_moe_weights_scaled"] or got["ffn_moe_weights_norm"]  # the weights the experts use
    assert len(got["ffn_moe_argsort"]) == len(final) == 2
    gates_main, gates_chunk = (t.reshape(n, -1).astype(np.float64) for t in final)
    ids_main, ids_chunk = (top_k(t, n, g.shape[1]) for t, g in zip(got["ffn_moe_argsort"], (gates_main, gates_chunk)))
    ids_chunk = ids_chunk // group  # the chunk call maps expert ids to their group's chunk expert
    assert not np.array_equal(ids_main, ids_chunk)  # the two calls route differently: a mix-up shows

    for k in range(K):  # k = 0 routes naturally; k >= 1 replays
        x = got["ffn_norm"][k].astype(np.float64)
        main = got["ffn_moe_out"][k].astype(np.float64)
        want_main = experts(w, "exps", x, ids_main, gates_main)
        assert rel_err(main, want_main) < 1e-4, f"evaluation {k + 1}: main experts"
        want_chunk = experts(w, "chexps", main, ids_chunk, gates_chunk)
        assert rel_err(got["ffn_adj_moe_out"][k], want_chunk) < 1e-4, f"evaluation {k + 1}: chunk experts"


def test_the_check_sees_a_routing_mix_up(grovemoe):
    """What the old replay did (the main experts given the chunk call's routing) is far outside
    the tolerance above, on the same captured tensors."""
    path, w, group = grovemoe
    names = [f"{k}-{IL}" for k in ("ffn_norm", "ffn_moe_out", "ffn_moe_argsort", "ffn_moe_weights_norm")]
    with loopcpp.Model(path) as m, m.context(n_ctx=64, capture=names, **EXACT) as ctx:
        ctx.eval(list(range(5, 17)), logits="none")
        got = ctx.captured
    n = 12
    x, main = (got[f"{k}-{IL}"][0].astype(np.float64) for k in ("ffn_norm", "ffn_moe_out"))
    gates_chunk = got[f"ffn_moe_weights_norm-{IL}"][1].reshape(n, -1).astype(np.float64)
    ids_chunk = top_k(got[f"ffn_moe_argsort-{IL}"][1], n, gates_chunk.shape[1]) // group
    assert rel_err(main, experts(w, "exps", x, ids_chunk, gates_chunk)) > 1e-2
