// llama-loop.h: training-free layer looping for llama.cpp (loopcpp).
//
// Re-runs a window of layers [start, end] K times per token with damped residual sub-steps
// (docs/looping.md is the contract). This header only adds functions: the public llama.cpp
// structs keep their layout, so programs built against the stock llama.h (llama-cpp-python
// included) load this libllama unchanged, and loop through LOOPCPP_LOOP with no code change.
//
// Configuration sources, highest precedence first: llama_loop_set(), the LOOPCPP_LOOP
// environment variable (read when a context is created), the GGUF metadata key "loopcpp.loop".
// A recipe from the environment or the metadata that does not fit the model being loaded is
// ignored with a warning in the log; it never makes context creation fail. LOOPCPP_LOOP set but
// empty means "no recipe": the metadata's is not used either. llama_opt_init turns a context's loop
// off (training runs the unmodified model), and llama_loop_set refuses to loop while training.
// All three use the spec-string grammar, e.g. "15:18x3", "15:18x3,layer,euler",
// "12:15x4,rk,beta=0.3,kv=last,decode=full", "auto", "off".
#pragma once

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Version of the loop API below; bumped when a declaration in this header changes.
#define LLAMA_LOOP_API_VERSION 6

// Largest number of sub-steps K accepted.
#define LLAMA_LOOP_MAX_STEPS 64

// Return codes of the functions below (llama_loop_last_error() says why).
#define LLAMA_LOOP_OK            0
#define LLAMA_LOOP_ERR_INVALID  -1 // a value out of range or a malformed spec string
#define LLAMA_LOOP_ERR_UNSUPPORTED -2 // architecture, memory type or context that cannot loop
#define LLAMA_LOOP_ERR_ALLOC    -3 // the looped graph's compute buffers could not be allocated
#define LLAMA_LOOP_ERR_BACKEND  -4 // unused: a backend that fails (an RPC server that died) reports through llama_decode

enum llama_loop_mode {
    LLAMA_LOOP_MODE_AUTO  = 0, // block for dense models, layer for MoE models
    LLAMA_LOOP_MODE_BLOCK = 1, // iterate the whole window as one operator
    LLAMA_LOOP_MODE_LAYER = 2, // iterate each window layer on its own, in order
};

enum llama_loop_integrator {
    LLAMA_LOOP_INTEGRATOR_NAIVE = 0, // x <- G(x), K times
    LLAMA_LOOP_INTEGRATOR_EULER = 1, // x <- x + (G(x) - x) / K, K times
    LLAMA_LOOP_INTEGRATOR_RK    = 2, // anchored K-stage Runge-Kutta, output beta*G(x0) + (1-beta)*x_K
};

enum llama_loop_kv {
    LLAMA_LOOP_KV_FIRST = 0, // window layers keep the unlooped model's K/V
    LLAMA_LOOP_KV_LAST  = 1, // window layers keep K/V of a stash chain seeded with the loop output
};

enum llama_loop_decode {
    LLAMA_LOOP_DECODE_BYPASS  = 0, // loop prompt ubatches only
    LLAMA_LOOP_DECODE_FULL    = 1, // loop every ubatch
    LLAMA_LOOP_DECODE_FIRST_N = 2, // loop prompt ubatches and the first decode_n decode ubatches after each
};

struct llama_loop_params {
    int32_t start;   // first window layer, or -1 for the default window (W = min(4, n_layer) centred at 0.47 depth)
    int32_t end;     // last window layer (inclusive), or -1 with start = -1
    int32_t n_steps; // K, sub-steps per window; 1 = loop off

    enum llama_loop_mode       mode;
    enum llama_loop_integrator integrator;
    float                      beta;     // rk only, in [0, 1]: 0 = euler, 1 = the unlooped model
    enum llama_loop_kv         kv;
    enum llama_loop_decode     decode;
    int32_t                    decode_n; // with LLAMA_LOOP_DECODE_FIRST_N

    bool freeze_routing; // block mode: route each window MoE layer once, on the first pass
};

// The out-of-the-box recipe for `model` (default window, K = 3, rk, beta = 0.5, kv first, bypass,
// block for dense / layer for MoE). With model == NULL the window and mode are left to resolve later.
LLAMA_API struct llama_loop_params llama_loop_default_params(const struct llama_model * model);

// Parses a spec string into *params (starting from llama_loop_default_params(model)).
// Returns LLAMA_LOOP_OK, or LLAMA_LOOP_ERR_INVALID naming the bad part in llama_loop_last_error().
LLAMA_API int32_t llama_loop_parse(const struct llama_model * model, const char * spec, struct llama_loop_params * params);

// Writes the canonical spec string of *params into buf (NUL-terminated, truncated to size).
// Returns the length it needs, excluding the NUL, or LLAMA_LOOP_ERR_INVALID for NULL or
// out-of-range params.
LLAMA_API int32_t llama_loop_format(const struct llama_loop_params * params, char * buf, size_t size);

// Checks *params against `model` without touching a context: window inside the model, K in
// [1, LLAMA_LOOP_MAX_STEPS], beta in [0, 1], enums in range, architecture converted.
LLAMA_API int32_t llama_loop_validate(const struct llama_model * model, const struct llama_loop_params * params);

// Sets the loop of `ctx` (validated first, and its graph reserved now: on any error, including
// LLAMA_LOOP_ERR_ALLOC, the context keeps its previous loop). Takes effect at the next decode;
// tokens already in the cache keep the K/V they were stored with. Returns a code above.
LLAMA_API int32_t llama_loop_set(struct llama_context * ctx, const struct llama_loop_params * params);

// Per sequence, within the context's loop (a server's per-request choice): `loop` false runs
// sequence `seq` unlooped; otherwise `decode` / `decode_n` replace the decode mode for it. The
// window, K and integrator stay the context's: sequences that share a ubatch share one graph.
// Lasts until llama_loop_seq_reset, llama_loop_set or llama_loop_clear. Returns a code above
// (LLAMA_LOOP_ERR_UNSUPPORTED for loop = true on a context that does not loop).
LLAMA_API int32_t llama_loop_seq_set(struct llama_context * ctx, llama_seq_id seq, bool loop,
                                     enum llama_loop_decode decode, int32_t decode_n);

// A request's choice for sequence `seq`, as a spec string: "" or "on" follows the context's loop,
// "off" (or K = 1) runs the sequence unlooped, and a recipe that equals the context's loop but
// for its decode mode uses that decode mode (e.g. "13:16x3,decode=full" on a context looping
// "13:16x3"). Any other recipe is LLAMA_LOOP_ERR_INVALID, with the reason in llama_loop_last_error().
LLAMA_API int32_t llama_loop_seq_set_spec(struct llama_context * ctx, llama_seq_id seq, const char * spec);

// Sequence `seq` follows the context's loop again (seq < 0: every sequence).
LLAMA_API int32_t llama_loop_seq_reset(struct llama_context * ctx, llama_seq_id seq);

// verify = true: the rows sequence `seq` contributes to the next ubatches verify a speculative
// draft (the token it sampled, then the drafted ones). They are decode steps, however many, not a
// prompt phase: under bypass they run the unlooped layers, so speculation leaves the answer as
// plain decoding gives it (docs/looping.md, "Speculative decoding"). Lasts until called with false,
// or llama_loop_seq_reset, llama_loop_set or llama_loop_clear. Returns a code above.
LLAMA_API int32_t llama_loop_seq_verify(struct llama_context * ctx, llama_seq_id seq, bool verify);

// Copies the active loop of `ctx` (resolved: concrete window and mode) into *params.
// Returns 1 if a loop is active (n_steps > 1), 0 if looping is off, LLAMA_LOOP_ERR_INVALID if ctx is NULL.
LLAMA_API int32_t llama_loop_get(const struct llama_context * ctx, struct llama_loop_params * params);

// Turns looping off for `ctx` (same as n_steps = 1); NULL is ignored.
LLAMA_API void llama_loop_clear(struct llama_context * ctx);

// The reason for the last error of a llama_loop_* call on this thread ("" if none).
LLAMA_API const char * llama_loop_last_error(void);

// Whether `model`'s architecture has a loop-capable graph builder (false for NULL or a model
// without layers): one that runs its layers through build_layer_stack, as listed from the
// patched builders when the library was configured.
LLAMA_API bool llama_loop_arch_supported(const struct llama_model * model);

// The architectures of the pinned llama.cpp, for listings: what llama.cpp says each one is.
enum llama_loop_arch_kind {
    LLAMA_LOOP_ARCH_LAYERED   = 0, // layers with attention: loops once its builder is converted
    LLAMA_LOOP_ARCH_RECURRENT = 1, // recurrent state only (mamba, rwkv)
    LLAMA_LOOP_ARCH_HYBRID    = 2, // attention and recurrent layers (jamba, lfm2, qwen3next, ...)
    LLAMA_LOOP_ARCH_DIFFUSION = 3, // denoising, not autoregressive (dream, llada)
};

// The name of architecture i (as in a GGUF's general.architecture), or NULL past the last one.
LLAMA_API const char * llama_loop_arch_name(int32_t i);

// Its kind (enum llama_loop_arch_kind), or -1 past the last one.
LLAMA_API int32_t llama_loop_arch_kind(int32_t i);

// An abort callback for llama_set_abort_callback(ctx, llama_loop_abort_on_flag, flag): compute
// stops (llama_decode returns 2) once the int32_t at `flag` is non-zero. For hosts that cannot
// run their own code on ggml's compute threads, such as Python: they set the flag from any thread.
LLAMA_API bool llama_loop_abort_on_flag(void * flag);

// llama_sampler_sample(smpl, ctx, idx) that fails with an error code instead of aborting the
// process: a grammar sampler aborts when the chain picks a token its grammar cannot accept (e.g.
// after a logit bias removed every token the grammar allows). Returns LLAMA_LOOP_OK with the token
// in *token, or LLAMA_LOOP_ERR_INVALID (llama_loop_last_error() says why); after a failure the
// sampler's state is undefined: free it.
LLAMA_API int32_t llama_loop_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx,
                                            llama_token * token);

// Connects to the ggml-rpc-server at `endpoint` ("host:port") and registers its devices with
// ggml, once per endpoint, as llama.cpp's --rpc does: models loaded afterwards with
// llama_model_params.devices = NULL place layers on them. Writes up to n_max of its devices
// (ggml_backend_dev_t) to devices when not NULL. Returns the number of devices, or
// LLAMA_LOOP_ERR_UNSUPPORTED (a build without GGML_RPC) / LLAMA_LOOP_ERR_INVALID (no server
// answers there), with the reason in llama_loop_last_error().
LLAMA_API int32_t llama_loop_rpc_add_server(const char * endpoint, void ** devices, size_t n_max);

// What a context holds, in bytes summed over its buffer types (host and devices), for benchmarks.
struct llama_loop_memory {
    size_t   model;           // weights
    size_t   context;         // KV cache (and recurrent state)
    size_t   compute;         // compute buffers, as reserved for the current loop's largest graph
    size_t   graph_meta;      // host memory of the graph metadata (tensor headers, node lists): two graphs
    uint32_t graph_max_nodes; // node budget of one graph of n_ubatch tokens, loop included
};

// Fills *out for `ctx`. Returns LLAMA_LOOP_OK, or LLAMA_LOOP_ERR_INVALID for NULL arguments.
LLAMA_API int32_t llama_loop_get_memory(const struct llama_context * ctx, struct llama_loop_memory * out);

// loopcpp's version string, e.g. "0.1.0".
LLAMA_API const char * llama_loop_version(void);

// The llama.cpp commit this library was built from (the pinned one), e.g. "0c1e57098".
LLAMA_API const char * llama_loop_llama_commit(void);

// LLAMA_LOOP_API_VERSION as compiled into the library.
LLAMA_API int32_t llama_loop_api_version(void);

#ifdef __cplusplus
}
#endif
