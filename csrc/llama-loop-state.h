// loopcpp internals shared with the patched llama.cpp: a context's loop state, split by who needs
// it (the recipe in llama_cparams, the per-ubatch decision in the graph params, the per-sequence
// choices and counts in llama_context), and the hooks llama_context calls.
#pragma once

#include "llama-loop.h"

#include <array>
#include <bitset>
#include <cstdint>
#include <vector>

struct llama_context;
struct llama_memory_i;
struct llama_ubatch;

// Loop off: what every context starts with.
llama_loop_params llama_loop_off_params();

// Sequence ids a loop state tracks: llama.cpp's LLAMA_MAX_SEQ (checked in llama-loop.cpp).
#define LLAMA_LOOP_MAX_SEQ 256

// Which rows (tokens) of the ubatch being built loop; the graph differs for each.
enum llama_loop_rows : uint8_t {
    LLAMA_LOOP_ROWS_NONE, // the unmodified graph
    LLAMA_LOOP_ROWS_SOME, // the looped graph, then a per-row choice of looped or natural states
    LLAMA_LOOP_ROWS_ALL,  // the looped graph
};

// A context's loop recipe (llama_cparams::loop): it shapes every graph, so it flows with cparams.
struct llama_loop_recipe {
    llama_loop_params params = llama_loop_off_params(); // resolved: concrete window and mode

    bool active() const { return params.n_steps > 1; }
};

// Which rows of one ubatch loop (llm_graph_params::loop): decided per ubatch by
// llama_loop_begin_ubatch (docs/looping.md, "When the loop runs").
struct llama_loop_decision {
    llama_loop_rows rows = LLAMA_LOOP_ROWS_SOME; // SOME until decided: graph reservation builds the largest graph
    std::bitset<LLAMA_LOOP_MAX_SEQ> seq_loops;   // does sequence s loop in this ubatch?

    // Does row i of ubatch loop? (any of its sequences does)
    bool row_loops(const llama_ubatch & ubatch, uint32_t i) const;
};

// Per sequence, what changes no graph (llama_context::loop_seqs): the caller's choices within the
// loop (llama_loop_seq_set, llama_loop_seq_verify) and the decode steps each sequence has kept.
// A count must not move with a ubatch that fails, so it advances only at llama_loop_end_ubatch.
struct llama_loop_sequences {
    std::bitset<LLAMA_LOOP_MAX_SEQ> off;                // the sequence never loops
    std::bitset<LLAMA_LOOP_MAX_SEQ> verify;             // its rows are decode steps, however many (speculative verification)
    std::array<uint8_t, LLAMA_LOOP_MAX_SEQ> decode {};  // 0: the loop's decode mode, else 1 + llama_loop_decode
    std::array<int32_t, LLAMA_LOOP_MAX_SEQ> decode_n {};

    std::array<uint32_t, LLAMA_LOOP_MAX_SEQ> n_decode {};   // decode steps since the sequence's own last prompt phase
    std::array<llama_pos, LLAMA_LOOP_MAX_SEQ> pos_next {};  // the position after its last computed row

    struct advance {
        llama_seq_id seq;
        uint32_t     n_decode;
        llama_pos    pos_next;
    };
    std::vector<advance> next; // once the current ubatch computes

    // Sequence seq (every one if seq < 0) follows the context's loop again.
    void reset_choices(llama_seq_id seq);
};

// Decides which sequences of `ubatch` loop (decode modes bypass / full / first:N, per sequence).
// A sequence of which `memory` holds nothing before this ubatch starts afresh (it is new, or was
// removed), whatever it counted before; rows removed since its last ubatch (a rejected draft) no
// longer count. The counts advance only at llama_loop_end_ubatch.
llama_loop_decision llama_loop_begin_ubatch(const llama_loop_recipe & recipe, llama_loop_sequences & seqs,
                                            const llama_memory_i * memory, const llama_ubatch & ubatch);

// The ubatch computed: its sequences' counts advance (a failed or aborted one leaves them).
void llama_loop_end_ubatch(llama_loop_sequences & seqs);

// Before a graph is reserved: the largest looped graph, whatever the last ubatch decided.
llama_loop_decision llama_loop_begin_reserve(const llama_loop_recipe & recipe);

// True when two ubatches build the same graph topology and constants (graph reuse check).
bool llama_loop_same_graph(const llama_loop_recipe & a, const llama_loop_decision & da,
                           const llama_loop_recipe & b, const llama_loop_decision & db);

// Extra graph nodes a looped graph of `model` needs on top of the unlooped one's budget.
uint32_t llama_loop_extra_nodes(const llama_loop_recipe & recipe, const llama_model & model);

// At context creation: applies LOOPCPP_LOOP, else the model's "loopcpp.loop" metadata.
// Throws std::runtime_error with the reason if the recipe is invalid for this context.
void llama_loop_init_context(llama_context * ctx);

// Turns the loop of ctx off, with a warning, before llama_opt_init sets it up for training.
void llama_loop_stop_for_training(llama_context * ctx);
