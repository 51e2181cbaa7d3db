// loopcpp: what a bad model file can reach in llama.cpp becomes an error, not an abort.
#pragma once

struct llama_hparams;
struct llama_model_loader;

// While a llama_assert_scope lives on a thread, a GGML_ASSERT / GGML_ABORT on that thread throws
// std::runtime_error with ggml's message; llama.cpp's loader already turns exceptions into a NULL
// model and a logged error. Other threads, and this one outside a scope, abort as before.
struct llama_assert_scope {
    llama_assert_scope();
    ~llama_assert_scope();
    llama_assert_scope(const llama_assert_scope &) = delete;
    llama_assert_scope & operator=(const llama_assert_scope &) = delete;
};

// Throws std::runtime_error for hyperparameters that load but would abort later, inside a ggml
// op on a compute thread where no scope can catch it (a negative or NaN norm epsilon).
void llama_check_hparams(const llama_hparams & hparams);

// Throws std::runtime_error for a weight of a type no llama.cpp model uses (integers, f64): the CPU
// backend has no matrix product for them and would crash in a compute thread.
void llama_check_tensor_types(const llama_model_loader & ml);
