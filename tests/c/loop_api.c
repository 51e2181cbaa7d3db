// The loop C API as an embedding application uses it, without Python: defaults, parsing,
// validation with error codes and messages, set/get/clear, and a looped decode.
// Usage: loop_api MODEL.gguf   (prints "N passed, M failed"; exit status 1 on any failure)
#include "llama-loop.h"
#include "ggml-opt.h"

#include <stdio.h>
#include <string.h>

static int n_pass = 0, n_fail = 0;

static void check(int ok, const char * what) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL: %s (last error: %s)\n", what, llama_loop_last_error());
    }
}

static void expect_error(struct llama_context * ctx, struct llama_loop_params p, int32_t code, const char * needle) {
    int32_t rc = llama_loop_set(ctx, &p);
    check(rc == code, needle);
    check(strstr(llama_loop_last_error(), needle) != NULL, needle);
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    check(model != NULL, "model loads");
    if (!model) {
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    check(ctx != NULL, "context");

    // defaults follow the contract's recipe for a 6-layer dense model
    struct llama_loop_params d = llama_loop_default_params(model);
    check(d.start == 1 && d.end == 4 && d.n_steps == 3 && d.mode == LLAMA_LOOP_MODE_BLOCK, "default window 1:4x3 block");
    check(d.integrator == LLAMA_LOOP_INTEGRATOR_RK && d.beta == 0.5f && d.kv == LLAMA_LOOP_KV_FIRST, "default rk, kv=first");
    check(llama_loop_arch_supported(model), "arch supported");

    // parse and format round trip
    struct llama_loop_params p;
    check(llama_loop_parse(model, "2:4x5,layer,euler,kv=last,decode=first:3", &p) == LLAMA_LOOP_OK, "parse");
    char buf[128];
    llama_loop_format(&p, buf, sizeof(buf));
    check(strcmp(buf, "2:4x5,layer,euler,kv=last,decode=first:3") == 0, "format");
    check(llama_loop_parse(model, "2:4x5,wobble", &p) == LLAMA_LOOP_ERR_INVALID, "bad option rejected");
    check(strstr(llama_loop_last_error(), "wobble") != NULL, "message names the bad option");

    // every invalid value is an error code with a message, and leaves the loop unchanged
    check(llama_loop_parse(model, "1:2x2", &p) == LLAMA_LOOP_OK && llama_loop_set(ctx, &p) == LLAMA_LOOP_OK, "set 1:2x2");
    struct llama_loop_params bad = d;
    bad.end = 6;            expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "outside the model");
    bad = d; bad.start = 3; bad.end = 2; expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "start > end");
    bad = d; bad.n_steps = 0;            expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "out of range");
    bad = d; bad.n_steps = LLAMA_LOOP_MAX_STEPS + 1; expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "out of range");
    bad = d; bad.beta = -0.1f;           expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "beta");
    bad = d; bad.integrator = (enum llama_loop_integrator) 7; expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "integrator");
    bad = d; bad.decode = LLAMA_LOOP_DECODE_FIRST_N; bad.decode_n = -1; expect_error(ctx, bad, LLAMA_LOOP_ERR_INVALID, "first:N");
    check(llama_loop_set(NULL, &d) == LLAMA_LOOP_ERR_INVALID, "NULL context rejected");
    struct llama_loop_params got;
    check(llama_loop_get(ctx, &got) == 1 && got.start == 1 && got.end == 2 && got.n_steps == 2, "rejected sets keep the loop");

    // a looped decode, then clear
    llama_token tokens[6] = { 5, 6, 7, 8, 9, 10 };
    check(llama_decode(ctx, llama_batch_get_one(tokens, 6)) == 0, "looped decode");
    llama_loop_clear(ctx);
    check(llama_loop_get(ctx, &got) == 0, "clear turns looping off");

    // training runs the unmodified model: llama_opt_init turns the loop off, and no loop is set after
    check(llama_loop_parse(model, "1:2x2", &p) == LLAMA_LOOP_OK && llama_loop_set(ctx, &p) == LLAMA_LOOP_OK, "loop before training");
    struct llama_opt_params op;
    memset(&op, 0, sizeof(op));
    op.param_filter   = llama_opt_param_filter_all;
    op.get_opt_pars   = ggml_opt_get_default_optimizer_params;
    op.optimizer_type = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
    llama_opt_init(ctx, model, op);
    check(llama_loop_get(ctx, &got) == 0, "llama_opt_init turns the loop off");
    check(llama_loop_set(ctx, &p) == LLAMA_LOOP_ERR_UNSUPPORTED, "no loop while training");
    check(strstr(llama_loop_last_error(), "training") != NULL, "the message says why");

    llama_free(ctx);
    llama_model_free(model);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
