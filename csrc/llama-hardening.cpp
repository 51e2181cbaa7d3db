#include "llama-hardening.h"

#include "llama-hparams.h"
#include "llama-model-loader.h"

#include "ggml.h"

#include <cmath>

#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>

#ifndef _WIN32
extern "C" void ggml_print_backtrace(void); // ggml-impl.h; exported by libggml-base on ELF and Mach-O
#endif

namespace {

thread_local int n_scopes = 0;              // scopes alive on this thread
ggml_abort_callback_t previous_callback = nullptr; // the host's own callback, called outside scopes
std::mutex callback_mutex;

void on_ggml_abort(const char * message) {
    if (n_scopes > 0) {
        // unwinds through ggml_abort (C, built with -fexceptions) into the loader's catch
        throw std::runtime_error(std::string("ggml assert: ") + message);
    }
    if (previous_callback) {
        previous_callback(message);
        return;
    }
    // ggml's default when no callback is set; ggml_abort calls abort() after we return
    fprintf(stderr, "%s\n", message);
#ifndef _WIN32
    ggml_print_backtrace();
#endif
}

} // namespace

llama_assert_scope::llama_assert_scope() {
    // ggml keeps one process-wide callback: a host that set its own after ours would disable every
    // scope, so each scope puts ours back and chains the host's (called for aborts outside scopes)
    std::lock_guard<std::mutex> lock(callback_mutex);
    const ggml_abort_callback_t current = ggml_set_abort_callback(on_ggml_abort);
    if (current != on_ggml_abort) {
        previous_callback = current;
    }
    n_scopes++;
}

llama_assert_scope::~llama_assert_scope() {
    n_scopes--;
}

void llama_check_hparams(const llama_hparams & hparams) {
    const struct { const char * name; float value; } eps[] = {
        { "layer_norm_epsilon",       hparams.f_norm_eps },
        { "layer_norm_rms_epsilon",   hparams.f_norm_rms_eps },
        { "group_norm_epsilon",       hparams.f_norm_group_eps },
    };
    for (const auto & e : eps) {
        if (!(e.value >= 0.0f) || !std::isfinite(e.value)) { // ggml's norm ops assert eps >= 0
            throw std::runtime_error(std::string("invalid ") + e.name + ": " + std::to_string(e.value));
        }
    }
    // ggml's RoPE asserts an even size no wider than the head, in a compute thread; not every
    // builder checks it first (gemma3's does not)
    for (uint32_t il = 0; hparams.rope_type != LLAMA_ROPE_TYPE_NONE && il < hparams.n_layer_all; ++il) {
        const uint32_t n_rot = hparams.n_rot(il), n_head = hparams.n_embd_head_k(il);
        if (n_rot % 2 != 0 || n_rot > n_head) {
            throw std::runtime_error("invalid rope.dimension_count " + std::to_string(n_rot) + " for layer " +
                                     std::to_string(il) + ": it must be even and at most the head size " +
                                     std::to_string(n_head));
        }
    }
}

void llama_check_tensor_types(const llama_model_loader & ml) {
    for (const auto & [name, w] : ml.weights_map) {
        switch (w.tensor->type) {
            case GGML_TYPE_I8: case GGML_TYPE_I16: case GGML_TYPE_I32: case GGML_TYPE_I64: case GGML_TYPE_F64:
                throw std::runtime_error("tensor '" + name + "' has type " + ggml_type_name(w.tensor->type) +
                                         ", which no model weight uses (a damaged file?)");
            default:
                break;
        }
    }
}
