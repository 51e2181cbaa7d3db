// loopcpp internals shared with the patched llama.cpp: a context's loop state (it lives in
// llama_cparams, so it flows by value into every graph) and the hooks llama_context calls.
#pragma once

#include "llama-loop.h"

#include <array>
#include <bitset>
#include <cstdint>
#include <utility>
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

struct llama_loop_state {
    llama_loop_params params = llama_loop_off_params(); // resolved: concrete window and mode

    // decided per ubatch by llama_loop_begin_ubatch (docs/looping.md, "When the loop runs")
    llama_loop_rows rows = LLAMA_LOOP_ROWS_SOME;  // SOME until decided: graph reservation builds the largest graph
    std::bitset<LLAMA_LOOP_MAX_SEQ> seq_loops;      // does sequence s loop in this ubatch?

    // per-sequence choices within the loop (llama_loop_seq_set)
    std::bitset<LLAMA_LOOP_MAX_SEQ> seq_off;             // the sequence never loops
    std::array<uint8_t, LLAMA_LOOP_MAX_SEQ> seq_decode {}; // 0: the loop's decode mode, else 1 + llama_loop_decode
    std::array<int32_t, LLAMA_LOOP_MAX_SEQ> seq_decode_n {};

    bool active() const { return params.n_steps > 1; }

    // Does row i of ubatch loop? (any of its sequences does)
    bool row_loops(const llama_ubatch & ubatch, uint32_t i) const;
};

// What the loop counts per sequence across ubatches. It lives in llama_context, not in cparams:
// graph parameters carry what shapes a graph, and a count must not move with a ubatch that fails.
struct llama_loop_counters {
    std::array<uint32_t, LLAMA_LOOP_MAX_SEQ> n_decode {}; // decode steps since the sequence's own last prompt phase
    std::vector<std::pair<int32_t, uint32_t>> next;       // (sequence, count) once the current ubatch computes
};

// Decides which sequences of `ubatch` loop (decode modes bypass / full / first:N, per sequence).
// A sequence of which `memory` holds nothing before this ubatch starts afresh (it is new, or was
// removed), whatever it counted before. The counts advance only at llama_loop_end_ubatch.
void llama_loop_begin_ubatch(llama_loop_state & state, llama_loop_counters & counters, const llama_memory_i * memory,
                             const llama_ubatch & ubatch);

// The ubatch computed: its sequences' counts advance (a failed or aborted one leaves them).
void llama_loop_end_ubatch(llama_loop_counters & counters);

// Before a graph is reserved: the largest looped graph, whatever the last ubatch decided.
void llama_loop_begin_reserve(llama_loop_state & state);

// True when two states build the same graph topology and constants (graph reuse check).
bool llama_loop_same_graph(const llama_loop_state & a, const llama_loop_state & b);

// Extra graph nodes a looped graph of `model` needs on top of the unlooped one's budget.
uint32_t llama_loop_extra_nodes(const llama_loop_state & state, const llama_model & model);

// At context creation: applies LOOPCPP_LOOP, else the model's "loopcpp.loop" metadata.
// Throws std::runtime_error with the reason if the recipe is invalid for this context.
void llama_loop_init_context(llama_context * ctx);

// Turns the loop of ctx off, with a warning, before llama_opt_init sets it up for training.
void llama_loop_stop_for_training(llama_context * ctx);
