// embed.c: a C program embedding loopcpp's libllama: load a model, give it a loop recipe, stream
// a greedy reply. Only the public headers: llama.h, and llama-loop.h for the recipe.
//
//   INC=$(python -c "import loopcpp; print(loopcpp.include_dir())")
//   LIB=$(python -c "import loopcpp; print(loopcpp.lib_dir())")
//   cc examples/embed.c -I"$INC" -L"$LIB" -lllama -Wl,-rpath,"$LIB" -o embed
//   ./embed model.gguf auto "The capital of France is" 16
#include "llama.h"
#include "llama-loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char * text, void * user_data) {
    (void) user_data;
    if (level == GGML_LOG_LEVEL_ERROR) { // not CONT: the loader's progress dots continue INFO lines
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf LOOP_SPEC PROMPT [N_TOKENS]\n", argv[0]);
        return 2;
    }
    const char * path = argv[1], * spec = argv[2], * prompt = argv[3];
    const int n_predict = argc > 4 ? atoi(argv[4]) : 32;

    llama_log_set(quiet, NULL);
    llama_backend_init();

    struct llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) {
        fprintf(stderr, "could not load %s\n", path);
        return 1;
    }
    struct llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = 1024;
    struct llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fprintf(stderr, "could not create a context\n");
        return 1;
    }

    // the recipe: parse the spec string for this model, then set it on the context
    struct llama_loop_params loop;
    if (llama_loop_parse(model, spec, &loop) != LLAMA_LOOP_OK || llama_loop_set(ctx, &loop) != LLAMA_LOOP_OK) {
        fprintf(stderr, "loop %s: %s\n", spec, llama_loop_last_error());
        return 1;
    }
    char described[128];
    llama_loop_get(ctx, &loop);
    llama_loop_format(&loop, described, sizeof described);
    fprintf(stderr, "loop: %s\n", described);

    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_prompt = -llama_tokenize(vocab, prompt, (int32_t) strlen(prompt), NULL, 0, true, true);
    llama_token * tokens = malloc(sizeof(llama_token) * (size_t) n_prompt);
    llama_tokenize(vocab, prompt, (int32_t) strlen(prompt), tokens, n_prompt, true, true);

    struct llama_sampler * sampler = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(sampler, llama_sampler_init_greedy());

    // the prompt is one ubatch (looped); each generated token is a decode step (decode=bypass by default)
    struct llama_batch batch = llama_batch_get_one(tokens, n_prompt);
    llama_token next;
    for (int i = 0; i < n_predict; i++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
        next = llama_sampler_sample(sampler, ctx, -1);
        if (llama_vocab_is_eog(vocab, next)) {
            break;
        }
        char piece[256];
        const int n = llama_token_to_piece(vocab, next, piece, sizeof piece, 0, true);
        fwrite(piece, 1, n > 0 ? (size_t) n : 0, stdout);
        fflush(stdout);
        batch = llama_batch_get_one(&next, 1);
    }
    putchar('\n');

    llama_sampler_free(sampler);
    free(tokens);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
