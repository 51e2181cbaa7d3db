// loopcpp internals shared with the patched llama.cpp: a context's loop state (it lives in
// llama_cparams, so it flows by value into every graph) and the hooks llama_context calls.
#pragma once

#include "llama-loop.h"

#include <cstdint>

struct llama_context;
struct llama_ubatch;

// Loop off: what every context starts with.
llama_loop_params llama_loop_off_params();

struct llama_loop_state {
    llama_loop_params params = llama_loop_off_params(); // resolved: concrete window and mode
    bool     looped_now = false; // does the ubatch being built loop? (set per ubatch)
    uint32_t n_decode   = 0;     // decode ubatches since the most recent prompt ubatch

    bool active() const { return params.n_steps > 1; }
};

// A prompt ubatch has a sequence contributing two or more tokens; a decode ubatch does not.
bool llama_loop_is_prompt(const llama_ubatch & ubatch);

// Decides whether `ubatch` loops (decode modes bypass / full / first:N) and advances the schedule.
void llama_loop_begin_ubatch(llama_loop_state & state, const llama_ubatch & ubatch);

// True when two states build the same graph topology and constants (graph reuse check).
bool llama_loop_same_graph(const llama_loop_state & a, const llama_loop_state & b);

// Extra graph nodes a looped graph needs on top of `base` nodes for the unlooped one.
uint32_t llama_loop_extra_nodes(const llama_loop_state & state, uint32_t base, uint32_t n_layer);

// At context creation: applies LOOPCPP_LOOP, else the model's "loopcpp.loop" metadata.
// Throws std::runtime_error with the reason if the recipe is invalid for this context.
void llama_loop_init_context(llama_context * ctx);

// Turns the loop of ctx off, with a warning, before llama_opt_init sets it up for training.
void llama_loop_stop_for_training(llama_context * ctx);
