"""One pp + tg measurement of a libllama through the plain llama.h API (loopcpp.stock runs this
file as a script, pointed at loopcpp's library or at an unmodified one).

    python _stock_child.py LIBLLAMA MODEL N_PROMPT N_GEN THREADS   -> one JSON line

It shares loopcpp's batch helpers, which touch no loaded library (importing loopcpp loads none).
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

from cffi import FFI

from loopcpp._batch import fill_sequence, spread_tokens


def _cdefs() -> str:
    spec = importlib.util.spec_from_file_location("_cdefs", Path(__file__).with_name("_cdefs.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CDEF


def main(lib_path: str, model_path: str, n_prompt: int, n_gen: int, threads: int) -> dict:
    ffi = FFI()
    ffi.cdef(_cdefs())  # functions bind lazily: the loop API is declared but never called
    lib = ffi.dlopen(lib_path)
    quiet = ffi.callback("void(int, const char *, void *)", lambda *a: None)
    lib.llama_log_set(quiet, ffi.NULL)
    lib.llama_backend_init()
    mparams = lib.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lib.llama_model_load_from_file(model_path.encode(), mparams)
    if model == ffi.NULL:
        raise SystemExit(f"could not load {model_path}")
    n = max(n_prompt, n_gen, 1)
    cparams = lib.llama_context_default_params()
    cparams.n_ctx = n + 8
    cparams.n_batch = cparams.n_ubatch = min(max(n_prompt, 1), 512)
    if threads:
        cparams.n_threads = cparams.n_threads_batch = threads
    ctx = lib.llama_init_from_model(model, cparams)
    n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
    tokens = spread_tokens(n_vocab, n)
    batch = lib.llama_batch_init(cparams.n_batch, 0, 1)

    def decode(toks, pos0):
        for start in range(0, len(toks), cparams.n_batch):
            chunk = toks[start:start + cparams.n_batch]
            fill_sequence(batch, chunk, pos0 + start, [start + i == len(toks) - 1 for i in range(len(chunk))])
            if lib.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")

    def clear():
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)

    decode(tokens[:16], 0)  # warm-up
    clear()
    out = {}
    if n_prompt:
        t0 = time.perf_counter()
        decode(tokens[:n_prompt], 0)
        out["pp_tps"] = n_prompt / (time.perf_counter() - t0)
        clear()
    if n_gen:
        t0 = time.perf_counter()
        for i in range(n_gen):
            decode(tokens[i:i + 1], i)
        out["tg_tps"] = n_gen / (time.perf_counter() - t0)
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)
    return out


if __name__ == "__main__":
    lib_path, model_path, n_prompt, n_gen, threads = sys.argv[1:6]
    print(json.dumps(main(lib_path, model_path, int(n_prompt), int(n_gen), int(threads))))
