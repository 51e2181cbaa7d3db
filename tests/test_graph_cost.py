"""What a looped graph computes, counted: each window layer's attention and FFN run exactly as
often as the schedule needs (no stash or shadow evaluation whose output nobody reads computes
more than its cache writes), the cache is the unlooped model's size, and the node budget grows
with K no faster than the graph does."""

import pytest

PROMPT = list(range(5, 21))


def runs_per_layer(ctx, n_layer):
    """How often each layer's attention softmax and FFN output were computed in the last eval."""
    got = ctx.captured
    return ([len(got.get(f"kq_soft_max-{il}", [])) for il in range(n_layer)],
            [len(got.get(f"ffn_out-{il}", [])) for il in range(n_layer)])


def expected_runs(n_layer, a, b, k, mode, kv):
    """Evaluations per layer that docs/looping.md's schedule needs: K per window layer, plus a
    stash (kv=last) or shadow (layer mode, kv=first) evaluation whose output feeds another layer;
    the chain's last evaluation is kept for its K/V writes only."""
    runs = [1] * n_layer
    for il in range(a, b + 1):
        runs[il] = k
        feeds_next = il < b
        if kv == "last" and feeds_next:
            runs[il] += 1  # stash chain
        if mode == "layer" and kv == "first" and a < il < b:
            runs[il] += 1  # shadow chain
    return runs


@pytest.mark.parametrize("mode", ["block", "layer"])
@pytest.mark.parametrize("kv", ["first", "last"])
@pytest.mark.parametrize("window,k", [((2, 2), 2), ((1, 3), 3), ((2, 5), 2)])
def test_window_layers_compute_only_what_the_schedule_reads(tiny_models, mode, kv, window, k):
    model = tiny_models["llama"]
    a, b = window
    names = [f"{n}-{il}" for il in range(model.n_layer) for n in ("kq_soft_max", "ffn_out")]
    with model.context(n_ctx=64, flash_attn=False, capture=names,
                       loop=f"{a}:{b}x{k},{mode},euler,kv={kv}") as ctx:
        ctx.eval(PROMPT)
        attn, ffn = runs_per_layer(ctx, model.n_layer)
        want = expected_runs(model.n_layer, a, b, k, mode, kv)
        assert attn == want and ffn == want
        ctx.eval([7])  # a decode step (bypass): every layer once
        assert runs_per_layer(ctx, model.n_layer) == ([1] * model.n_layer,) * 2


def test_kv_last_costs_only_the_cache_writes_of_one_more_layer(tiny_models):
    """kv=last against kv=first on a one-layer window: the extra nodes are the layer's norm and
    K/V projections with their cache writes, far fewer than a whole layer evaluation."""
    model = tiny_models["llama"]
    nodes = {}
    with model.context(n_ctx=64, count_nodes=True) as ctx:
        for spec in ("off", "2:2x2", "2:2x3", "2:2x2,kv=last"):
            ctx.set_loop(spec)
            ctx.reset()
            ctx.eval(PROMPT)
            nodes[spec] = ctx.graph_nodes
    per_step = nodes["2:2x3"] - nodes["2:2x2"]  # one layer evaluation and one damped step
    extra = nodes["2:2x2,kv=last"] - nodes["2:2x2"]
    assert nodes["off"] < nodes["2:2x2"] and 0 < extra < per_step / 2, nodes


def test_memory_cache_is_the_unlooped_size_and_the_node_budget_is_bounded(tiny_models):
    model = tiny_models["llama"]
    with model.context(n_ctx=64, n_ubatch=16, n_batch=16, count_nodes=True) as ctx:
        ctx.eval(PROMPT)
        off = ctx.memory()
        assert off["kv"] > 0 and off["compute"] > 0 and off["model"] > 0 and off["graph_meta"] > 0
        budgets = {}
        for k in (1, 2, 8, 64):
            ctx.set_loop(f"1:4x{k},kv=last")
            ctx.reset()
            ctx.eval(PROMPT)
            mem = ctx.memory()
            assert mem["kv"] == off["kv"] and mem["model"] == off["model"]
            assert ctx.graph_nodes <= mem["graph_max_nodes"]
            budgets[k] = (mem["graph_max_nodes"], ctx.graph_nodes)
    assert budgets[1][0] == off["graph_max_nodes"]
    # the budget grows linearly with K, and stays within a small multiple of what the graph uses
    for k in (8, 64):
        budget, used = budgets[k]
        assert budget <= 4 * used, budgets


def test_memory_refuses_a_closed_context(tiny_models):
    from loopcpp.errors import ClosedError

    ctx = tiny_models["llama"].context(n_ctx=32)
    ctx.close()
    with pytest.raises(ClosedError):
        ctx.memory()
    with pytest.raises(Exception, match="count_nodes"):
        tiny_models["llama"].context(n_ctx=32).graph_nodes


@pytest.mark.parametrize("k", [2, 3])
def test_block_kv_last_with_unlooped_rows_keeps_only_the_stash_writes(tiny_models, k):
    """A ubatch where one sequence loops (its prompt) and another does not (a decode step): in
    block mode the stash chain's output is never read (the unlooped rows take the window's first
    evaluation), so its last layer, as with every row looping, computes only its cache writes."""
    model = tiny_models["llama"]
    names = [f"{n}-{il}" for il in range(model.n_layer) for n in ("kq_soft_max", "ffn_out")]
    with model.context(n_ctx=64, n_seq_max=2, flash_attn=False, capture=names, loop=f"1:3x{k},block,euler,kv=last") as ctx:
        ctx.eval_batch([5, 6, 7, 8], [0, 1, 2, 3], [1] * 4)  # sequence 1's prompt
        ctx.eval_batch(PROMPT[:6] + [9], list(range(6)) + [4], [0] * 6 + [1])  # 0 prompts, 1 decodes
        attn, ffn = runs_per_layer(ctx, model.n_layer)
    want = expected_runs(model.n_layer, 1, 3, k, "block", "last")
    assert attn == want and ffn == want, (attn, ffn, want)
