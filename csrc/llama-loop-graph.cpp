// The layer re-execution graph builder: schedule, integrators, cache policy and routing freeze
// (docs/looping.md). Each converted architecture hands its layer body to build_layer_stack.
//
// Ordering invariant: every evaluation of a window layer writes its K/V into the same cache
// cells the unlooped model uses, then reads the cache. Each evaluation's output is expanded into
// the graph before the next evaluation is built, so its reads precede the next one's writes
// (backends run nodes in insertion order), and the cache never grows with K. The writes that
// must stay (cache policy) are emitted last.

#include "llama-loop-graph.h"

#include "llama-batch.h"
#include "llama-graph.h"
#include "llama-kv-cache.h"

void llm_graph_input_loop_rows::set_input(const llama_ubatch * ubatch) {
    std::vector<int32_t> rows(ubatch->n_tokens);
    for (uint32_t i = 0; i < ubatch->n_tokens; ++i) {
        rows[i] = decision.row_loops(*ubatch, i) ? i : ubatch->n_tokens + i;
    }
    ggml_backend_tensor_set(idx, rows.data(), 0, ggml_nbytes(idx));
}

bool llm_graph_input_loop_rows::can_reuse(const llm_graph_params & params) {
    decision = params.loop; // the graph is the same; the decisions are the new ubatch's
    return idx->ne[0] == params.ubatch.n_tokens;
}

llama_loop_graph *& llama_loop_graph::active() {
    thread_local llama_loop_graph * graph = nullptr;
    return graph;
}

void llama_loop_on_cache_write(const llama_loop_kv_write & w) {
    if (llama_loop_graph * graph = llama_loop_graph::active()) {
        graph->on_kv_write(w);
    }
}

namespace {

// While it lives, the graph context builds into a scratch graph of its own instead of gf: the
// nodes built meanwhile reach gf only if something expanded into gf later depends on them.
struct scratch_graph {
    llm_graph_context & graph;
    ggml_cgraph * const kept;
    ggml_context * ctx;

    explicit scratch_graph(llm_graph_context & gc) : graph(gc), kept(gc.gf) {
        const size_t n = ggml_graph_size(kept);
        ctx      = ggml_init({ ggml_graph_overhead_custom(n, false), nullptr, /*no_alloc =*/ true });
        graph.gf = ggml_new_graph_custom(ctx, n, false);
    }
    ~scratch_graph() {
        graph.gf = kept;
        ggml_free(ctx);
    }
    scratch_graph(const scratch_graph &) = delete;
    scratch_graph & operator=(const scratch_graph &) = delete;
};

// One evaluation of the builder's layer body: layer il on x, picking the output rows `rows` (none
// if null). The body reads its input from the builder's inpL and leaves its output there, and
// picks rows where the builder's inp_out_ids is set, as in the builder's own layer loop.
struct layer_body {
    ggml_tensor *& inpL;
    ggml_tensor *& inp_out_ids;
    const llm_graph_context::llm_layer_fn & body;

    ggml_tensor * operator()(int il, ggml_tensor * x, ggml_tensor * rows) const {
        inpL        = x;
        inp_out_ids = rows;
        body(il);
        return inpL;
    }
};

struct loop_builder {
    llm_graph_context & g;
    const layer_body & layer;
    const llama_loop_params & p;
    llama_loop_graph & hooks;
    ggml_tensor * rows = nullptr; // per-row choice (llm_graph_input_loop_rows), null when every row loops
    int token_dim = 1;            // the residual's token dimension: [n_embd, n_tokens] or several streams
    bool stashing = false;        // building the kv=last stash chain

    // Per window layer, the input of its canonical evaluation: the one whose cache writes the cache
    // keeps (the natural chain under kv=first, the stash chain under kv=last). The layer's input
    // features (t_layer_inp, which eagle3 and MTP drafts read) show this one, as its K/V do.
    std::vector<ggml_tensor *> canonical_inp {};

    // Row i of looped where row i loops, else row i of natural.
    ggml_tensor * select(ggml_tensor * looped, ggml_tensor * natural) {
        if (!rows) {
            return looped;
        }
        if (token_dim == 1 && ggml_n_dims(looped) <= 2) {
            ggml_tensor * y = ggml_get_rows(g.ctx0, ggml_concat(g.ctx0, looped, natural, 1), rows);
            g.cb(y, "loop_select", p.end);
            return y;
        }
        // several residual streams: swap the tokens into dim 3, pick from [streams * n_embd, n_tokens]
        // rows, swap back (every step copies exactly)
        const int d = token_dim;
        auto swap = [&](ggml_tensor * t) {
            return ggml_cont(g.ctx0, ggml_permute(g.ctx0, t, 0, d == 1 ? 3 : 1, d == 2 ? 3 : 2, d));
        };
        auto flat = [&](ggml_tensor * t) { // t swapped: [n_embd, .., .., n_tokens]
            return ggml_reshape_2d(g.ctx0, t, ggml_nelements(t) / t->ne[3], t->ne[3]);
        };
        ggml_tensor * swapped = swap(looped);
        ggml_tensor * y = ggml_get_rows(g.ctx0, ggml_concat(g.ctx0, flat(swapped), flat(swap(natural)), 1), rows);
        y = ggml_reshape_4d(g.ctx0, y, swapped->ne[0], swapped->ne[1], swapped->ne[2], swapped->ne[3]);
        y = ggml_reshape(g.ctx0, swap(y), looped);
        g.cb(y, "loop_select", p.end);
        return y;
    }

    // One evaluation of layer il inside the window (its router calls are counted from 0).
    ggml_tensor * run(int il, ggml_tensor * x) {
        hooks.begin_layer();
        ggml_tensor * y = layer(il, x, nullptr);
        if (hooks.record_kv || stashing) {
            canonical_inp[il] = g.res->t_layer_inp[il]; // as the builder set it (null if it sets none)
        }
        return y;
    }

    // One evaluation of the window layers [a, b] on x (the operator G of block or layer mode).
    ggml_tensor * eval(int a, int b, ggml_tensor * x) {
        for (int il = a; il <= b; ++il) {
            x = run(il, x);
        }
        ggml_build_forward_expand(g.gf, x); // before the next evaluation's cache writes
        return x;
    }

    // Layer il on x for its cache writes only (a stash or shadow evaluation whose output nobody
    // reads): the builder expands its attention, FFN and router into a scratch graph, and only the
    // recorded writes (restore_kv, emit_kv_one) bring what they need into the graph. Returns the
    // first write's index.
    size_t kv_only(int il, ggml_tensor * x) {
        const size_t first = hooks.kv_writes.size();
        scratch_graph scratch(g);
        hooks.record_kv = true;
        run(il, x);
        hooks.record_kv = false;
        return first;
    }

    // x + (gx - x) / K: one damped sub-step.
    ggml_tensor * damped(ggml_tensor * x, ggml_tensor * gx, int il) {
        ggml_tensor * d = ggml_scale(g.ctx0, ggml_sub(g.ctx0, gx, x), 1.0f / p.n_steps);
        ggml_tensor * y = ggml_add(g.ctx0, x, d);
        g.cb(y, "loop_step", il);
        return y;
    }

    // I_K(G, x0) with G = layers [a, b]. The first evaluation (on x0) routes with `first_route`
    // and may record its cache writes; later ones replay routing when `replay_routing` is set.
    // *first receives G(x0).
    ggml_tensor * integrate(int a, int b, ggml_tensor * x0, bool replay_routing,
                            llama_loop_graph::route_mode first_route, bool record_first_kv,
                            ggml_tensor ** first = nullptr) {
        hooks.route     = first_route;
        hooks.record_kv = record_first_kv;
        ggml_tensor * n = eval(a, b, x0);
        hooks.route     = replay_routing ? llama_loop_graph::ROUTE_REPLAY : llama_loop_graph::ROUTE_NATURAL;
        hooks.record_kv = false;
        if (first) {
            *first = n;
        }

        ggml_tensor * x = nullptr;
        switch (p.integrator) {
            case LLAMA_LOOP_INTEGRATOR_NAIVE:
                x = n;
                for (int k = 1; k < p.n_steps; ++k) {
                    x = eval(a, b, x);
                }
                return x;
            case LLAMA_LOOP_INTEGRATOR_EULER:
            case LLAMA_LOOP_INTEGRATOR_RK:
                x = damped(x0, n, b);
                for (int k = 1; k < p.n_steps; ++k) {
                    x = damped(x, eval(a, b, x), b);
                }
                break;
        }
        if (p.integrator == LLAMA_LOOP_INTEGRATOR_RK) {
            // beta * G(x0) + (1 - beta) * x_K
            x = ggml_add(g.ctx0, ggml_scale(g.ctx0, n, p.beta), ggml_scale(g.ctx0, x, 1.0f - p.beta));
            g.cb(x, "loop_rk", b);
        }
        return x;
    }

    // Emits the recorded writes of layer il (all window layers if il < 0) again, after every read.
    void restore_kv(int il) {
        for (size_t i = 0; i < hooks.kv_writes.size(); ++i) {
            if (il < 0 || hooks.kv_writes[i].il == il) {
                emit_kv_one(i);
            }
        }
    }

    void emit_kv_one(size_t i) {
        const llama_loop_kv_write & w = hooks.kv_writes[i];
        ggml_build_forward_expand(g.gf, w.is_v ? w.mctx->cpy_v(g.ctx0, w.cur, w.idxs, w.il)
                                               : w.mctx->cpy_k(g.ctx0, w.cur, w.idxs, w.il));
    }

    ggml_tensor * block(ggml_tensor * x0) {
        const bool first_kv = p.kv == LLAMA_LOOP_KV_FIRST; // the first pass is the natural chain
        const auto route = p.freeze_routing ? llama_loop_graph::ROUTE_RECORD : llama_loop_graph::ROUTE_NATURAL;
        ggml_tensor * first = nullptr; // G(x0): the natural window output
        ggml_tensor * y = integrate(p.start, p.end, x0, p.freeze_routing, route, first_kv, &first);
        ggml_build_forward_expand(g.gf, y);
        if (first_kv) {
            restore_kv(-1);
        } else {
            stash(select(y, x0), false); // rows that do not loop store the natural chain's K/V
        }
        return select(y, first);
    }

    ggml_tensor * layerwise(ggml_tensor * x0) {
        const bool first_kv = p.kv == LLAMA_LOOP_KV_FIRST;
        ggml_tensor * x = x0;
        ggml_tensor * h = x0; // shadow chain: the input layer il receives in the unlooped model
        for (int il = p.start; il <= p.end; ++il) {
            ggml_tensor * h_out = nullptr;
            if (first_kv && il > p.start) {
                // shadow evaluation: its K/V are the ones the cache keeps (restore_kv below)
                hooks.route = llama_loop_graph::ROUTE_NATURAL;
                if (il < p.end || rows) {
                    hooks.record_kv = true;
                    h_out = run(il, h);
                    hooks.record_kv = false;
                    ggml_build_forward_expand(g.gf, h_out);
                } else {
                    kv_only(il, h); // the last one's output would only be needed to select rows
                }
            }
            // layer start's first evaluation is on x0, its shadow input: record that one
            ggml_tensor * first = nullptr;
            x = integrate(il, il, x, true, llama_loop_graph::ROUTE_RECORD, first_kv && il == p.start, &first);
            ggml_build_forward_expand(g.gf, x);
            if (first_kv) {
                restore_kv(il);
            }
            h = il == p.start ? first : h_out;
        }
        if (!first_kv) {
            // rows that do not loop store the natural chain's K/V, and it gives their output
            h = stash(select(x, x0), rows != nullptr);
        }
        return select(x, h); // h: the shadow chain, i.e. the natural one
    }

    // kv=last: layer start stores K/V of y, layer start+1 of L_start(y), ...; the chain's output
    // is computed only when `output` asks for it (layer mode, where some rows do not loop), else
    // the last layer keeps only its cache writes and the result is null.
    ggml_tensor * stash(ggml_tensor * y, bool output) {
        hooks.route     = llama_loop_graph::ROUTE_NATURAL;
        hooks.record_kv = false;
        stashing        = true;
        ggml_tensor * z = y;
        for (int il = p.start; il <= p.end; ++il) {
            if (il == p.end && !output) {
                const size_t first = kv_only(il, z);
                for (size_t i = first; i < hooks.kv_writes.size(); ++i) {
                    emit_kv_one(i);
                }
                z = nullptr;
                break;
            }
            z = run(il, z);
            ggml_build_forward_expand(g.gf, z);
        }
        stashing = false;
        return z;
    }
};

// The layers on x, the window looped: what build_layer_stack leaves in the builder's inpL.
ggml_tensor * build_stack(llm_graph_context & g, const layer_body & layer, ggml_tensor * x, ggml_tensor * out_ids_last,
                          int token_dim) {
    if (!g.cparams.loop.active() || g.loop_rows.rows == LLAMA_LOOP_ROWS_NONE) {
        for (int il = 0; il < g.n_layer; ++il) {
            x = layer(il, x, il == g.n_layer - 1 ? out_ids_last : nullptr);
        }
        return x;
    }

    const llama_loop_params & p = g.cparams.loop.params;

    for (int il = 0; il < p.start; ++il) {
        x = layer(il, x, nullptr);
    }

    llama_loop_graph hooks;
    hooks.routes.resize(g.n_layer);
    // the hooks live while the window is built, also when a graph assert throws out of it
    struct hooks_scope {
        llm_graph_context & graph;
        hooks_scope(llm_graph_context & gc, llama_loop_graph & h) : graph(gc) { graph.loop = &h; llama_loop_graph::active() = &h; }
        ~hooks_scope() { graph.loop = nullptr; llama_loop_graph::active() = nullptr; }
    };

    loop_builder b { g, layer, p, hooks };
    b.token_dim = token_dim;
    b.canonical_inp.resize(g.n_layer, nullptr);
    if (g.loop_rows.rows == LLAMA_LOOP_ROWS_SOME) {
        auto inp = std::make_unique<llm_graph_input_loop_rows>(g.loop_rows);
        inp->idx = ggml_new_tensor_1d(g.ctx0, GGML_TYPE_I32, g.n_tokens);
        ggml_set_input(inp->idx);
        b.rows = inp->idx;
        g.res->add_input(std::move(inp));
    }
    ggml_tensor * y = nullptr;
    {
        hooks_scope scope(g, hooks);
        y = p.mode == LLAMA_LOOP_MODE_LAYER ? b.layerwise(x) : b.block(x);
    }
    for (int il = p.start; il <= p.end; ++il) {
        g.res->t_layer_inp[il] = b.canonical_inp[il];
    }

    if (p.end == g.n_layer - 1) {
        // the window holds the last layer: pick the output rows once, after the loop
        return out_ids_last ? ggml_get_rows(g.ctx0, y, out_ids_last) : y;
    }
    for (int il = p.end + 1; il < g.n_layer; ++il) {
        y = layer(il, y, il == g.n_layer - 1 ? out_ids_last : nullptr);
    }
    return y;
}

} // namespace

void llm_graph_context::build_layer_stack(ggml_tensor *& inpL, ggml_tensor *& inp_out_ids, ggml_tensor * out_ids_last,
                                          const llm_layer_fn & body, int token_dim) {
    ggml_tensor * const out_ids = inp_out_ids; // the builder's, given back when the stack is built
    const layer_body layer { inpL, inp_out_ids, body };
    inpL        = build_stack(*this, layer, inpL, out_ids_last, token_dim);
    inp_out_ids = out_ids;
}

