// loopcpp internals: hooks that llama-graph.cpp calls while a looped window is being built.
#pragma once

#include "llama-graph.h"
#include "llama-loop-state.h"

#include <vector>

struct ggml_tensor;
class llama_kv_cache_context;

// For a ubatch where only some rows loop (LLAMA_LOOP_ROWS_SOME): which rows take the looped
// states. select() stacks looped and natural states and picks each row with get_rows, an exact
// copy, so a row that does not loop gets the unmodified model's bits.
class llm_graph_input_loop_rows : public llm_graph_input_i {
public:
    explicit llm_graph_input_loop_rows(const llama_loop_decision & d) : decision(d) {}

    void set_input(const llama_ubatch * ubatch) override;
    bool can_reuse(const llm_graph_params & params) override;

    ggml_tensor * idx = nullptr; // I32 [n_tokens]: i for a looped row, n_tokens + i for a natural one

private:
    llama_loop_decision decision; // the ubatch's: which sequences loop
};

// One cache write (K or V) as an attention builder emitted it (after any rotation), so it can be
// emitted again. Every build_attn variant writes through llama_kv_cache_context::cpy_k / cpy_v,
// which report here; a K-only cache (MLA) reports no V write, so none is replayed.
struct llama_loop_kv_write {
    int il;
    const llama_kv_cache_context * mctx;
    bool is_v;
    ggml_tensor * cur;
    ggml_tensor * idxs;
};

// Called by llama_kv_cache_context::cpy_k / cpy_v: records the write when the looped graph being
// built on this thread asks for it (graphs are built on one thread at a time per context).
void llama_loop_on_cache_write(const llama_loop_kv_write & w);

struct llama_loop_graph {
    enum route_mode {
        ROUTE_NATURAL, // the router runs as usual
        ROUTE_RECORD,  // the router runs; keep its experts and weights per layer
        ROUTE_REPLAY,  // use the kept experts and weights; the router is not built
    };

    route_mode route     = ROUTE_NATURAL;
    bool       record_kv = false; // keep the cache writes of the evaluation being built

    std::vector<llama_loop_kv_write> kv_writes;

    struct routing {
        ggml_tensor * experts = nullptr;
        ggml_tensor * weights = nullptr;
    };
    // [n_layer][router call within one evaluation of the layer]: a layer may route more than
    // once (grovemoe: its main experts, then its chunk experts), and each call replays its own
    std::vector<std::vector<routing>> routes;
    size_t n_route_calls = 0; // router calls so far in the layer evaluation being built

    // A layer evaluation starts: its router calls are counted from 0 again.
    void begin_layer() { n_route_calls = 0; }

    void on_kv_write(const llama_loop_kv_write & w) {
        if (record_kv) {
            kv_writes.push_back(w);
        }
    }

    // The looped graph being built on this thread, if any (set by build_layer_stack).
    static llama_loop_graph *& active();

    void on_route(int il, ggml_tensor *& experts, ggml_tensor *& weights) {
        const size_t call = n_route_calls++;
        std::vector<routing> & calls = routes[il];
        if (route == ROUTE_RECORD) {
            if (calls.size() <= call) {
                calls.resize(call + 1);
            }
            calls[call] = { experts, weights };
        } else if (route == ROUTE_REPLAY && call < calls.size() && calls[call].experts) {
            experts = calls[call].experts;
            weights = calls[call].weights;
        }
    }
};
