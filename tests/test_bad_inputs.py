"""Bad model files and bad inputs, each in a subprocess: a process killed by a signal fails the
test, a clear exception passes. What a desktop app's user can hand the library must never take
the app down."""

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import loopcpp
import tinymodels


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def load_fails_cleanly(path, needle: str = "") -> str:
    r = run(f"""
        import loopcpp
        try:
            loopcpp.Model({str(path)!r})
        except loopcpp.LoopcppError as e:
            print("ERROR:", type(e).__name__, e)
        else:
            print("LOADED")
    """)
    assert r.returncode == 0, f"exit {r.returncode} (negative: killed by a signal)\n{r.stderr[-1500:]}"
    assert "ERROR: ModelLoadError" in r.stdout, r.stdout + r.stderr[-500:]
    assert needle in r.stdout, r.stdout
    return r.stdout


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return tinymodels.write(tinymodels.TinySpec("llama"), tmp_path_factory.mktemp("bad") / "good.gguf").read_bytes()


def test_truncated_file(good, tmp_path):
    for n in (0, 3, 24, len(good) // 2, len(good) - 1):
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(good[:n])
        load_fails_cleanly(p)


def test_wrong_magic(good, tmp_path):
    p = tmp_path / "magic.gguf"
    p.write_bytes(b"GGUX" + good[4:])
    load_fails_cleanly(p)


@pytest.mark.parametrize("offset,value", [(8, 2**62), (16, 2**62), (8, 10**6), (4, 99)])
def test_corrupted_header_counts(good, tmp_path, offset, value):
    """The version (offset 4), tensor count (8) and metadata count (16) of the GGUF header."""
    p = tmp_path / "hdr.gguf"
    fmt = "<I" if offset == 4 else "<Q"
    p.write_bytes(good[:offset] + struct.pack(fmt, value) + good[offset + struct.calcsize(fmt):])
    load_fails_cleanly(p)


def test_a_missing_tensor(tmp_path):
    path = tinymodels.write(tinymodels.TinySpec("llama"), tmp_path / "missing.gguf", drop=("blk.3.ffn_down.weight",))
    load_fails_cleanly(path, "blk.3.ffn_down.weight")


def test_a_directory_and_a_missing_file(tmp_path):
    load_fails_cleanly(tmp_path, "")
    load_fails_cleanly(tmp_path / "nothing-here.gguf", "not found")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(good, tmp_path):
    p = tmp_path / "locked.gguf"
    p.write_bytes(good)
    p.chmod(0)
    load_fails_cleanly(p)


def test_a_vocabulary_that_repeats_a_token(tmp_path):
    """Upstream's loader asserts (id_to_token.size() == token_to_id.size()) and aborts the host;
    loopcpp's patch turns that into a load error."""
    path = tinymodels.write(tinymodels.TinySpec("llama"), tmp_path / "dup.gguf", duplicate_token=True)
    load_fails_cleanly(path, "")


@pytest.mark.parametrize("code,needle", [
    ("m.context(n_ctx=256).eval([5] * 300)", "ContextFullError"),
    ("m.context(n_ctx=32).eval([])", "ValueError"),
    ("m.context(n_ctx=32).eval([10**6])", "outside the vocabulary"),
    ("m.context(n_ctx=32).eval([-1])", "outside the vocabulary"),
    ("list(m.context(n_ctx=32).generate('', max_tokens=2, add_special=False))", "empty"),
    ("m.context(n_ctx=10**9)", "ContextError"),
    ("m.context(n_ctx=2**31 - 1)", "ContextError"),
    ("m.context(n_ctx=64, n_batch=2**31 - 1).eval([5])", "OK"),  # llama.cpp clamps n_batch to n_ctx
    ("m.context(n_ctx=-5)", "n_ctx"),
])
def test_bad_inputs_raise(tiny_paths, code, needle):
    r = run(f"""
        import loopcpp
        m = loopcpp.Model({str(tiny_paths["llama"])!r})
        try:
            {code}
        except Exception as e:
            print("ERROR:", type(e).__name__, e)
        else:
            print("OK")
    """)
    assert r.returncode == 0, f"exit {r.returncode} (negative: killed by a signal)\n{r.stderr[-1500:]}"
    assert needle in r.stdout, r.stdout + r.stderr[-500:]


@pytest.mark.parametrize("arch, why", [("mamba", "it is recurrent"), ("lfm2", "it mixes attention with recurrent layers"),
                                       ("hrm_text", "it already re-runs its layers")])
def test_a_loop_on_a_recurrent_hybrid_or_looped_model_is_refused_cleanly(arch, why, tmp_path):
    """Mamba keeps a recurrent state, not a KV cache, LFM2 mixes attention with such layers, and
    HRM-Text already cycles its two stacks: an explicit loop is an error naming the architecture
    and the reason, and a global LOOPCPP_LOOP is ignored with a warning (the model still runs)."""
    write = {"mamba": tinymodels.write_mamba, "lfm2": tinymodels.write_lfm2, "hrm_text": tinymodels.write_hrm_text}[arch]
    path = write(tmp_path / f"{arch}.gguf")
    r = run(f"""
        import os, loopcpp
        m = loopcpp.Model({str(path)!r})
        print("supported:", m.loop_supported)
        with m.context(n_ctx=64) as ctx:
            ctx.eval([5, 6, 7])
            try:
                ctx.set_loop("0:1x2")
            except loopcpp.LoopConfigError as e:
                print("ERROR:", e)
        os.environ["LOOPCPP_LOOP"] = "0:1x3"
        with m.context(n_ctx=64) as ctx:
            print("env loop:", ctx.loop, "logits:", ctx.eval([5, 6, 7]).shape)
    """)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-1500:]}"
    assert "supported: False" in r.stdout
    assert f"ERROR: architecture '{arch}' cannot loop: {why}" in r.stdout, r.stdout
    assert "env loop: off logits: (288,)" in r.stdout, r.stdout


def test_a_loop_on_an_encoder_is_refused_though_its_builder_loops(tmp_path):
    """A llama whose GGUF says its attention is bidirectional runs llama's loop-capable builder,
    but the contract's evaluations attend causally: the loop is refused with the reason."""
    path = tinymodels.write(tinymodels.TinySpec("llama"), tmp_path / "encoder.gguf", causal=False)
    with loopcpp.Model(path) as m, m.context(n_ctx=64, embeddings=True) as ctx:
        assert np.isfinite(ctx.embed("abc")).all()
        with pytest.raises(loopcpp.LoopConfigError, match="architecture 'llama' cannot loop: it is an encoder"):
            ctx.set_loop("1:2x2")


def test_a_vocabulary_only_model_tokenizes_and_refuses_the_rest(tiny_paths):
    """llama.cpp aborts when asked for the layer shapes of a vocabulary-only model: the Python
    Model never asks, and refuses contexts and loops with a reason."""
    r = run(f"""
        import loopcpp
        m = loopcpp.Model({str(tiny_paths["qwen2"])!r}, vocab_only=True)
        print("tokens:", m.tokenize("ab"), "layers:", m.n_layer, "loops:", m.loop_supported)
        for attempt in (lambda: m.context(n_ctx=32), lambda: m.default_loop):
            try:
                attempt()
            except loopcpp.LoopcppError as e:
                print("ERROR:", type(e).__name__, e)
    """)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-1500:]}"
    assert "layers: 0 loops: False" in r.stdout
    assert "ERROR: ContextError a vocabulary-only model" in r.stdout
    assert "ERROR: LoopConfigError a vocabulary-only model has no layers" in r.stdout


def test_vocabulary_calls_fail_with_values_their_callers_handle(tiny_models):
    """What llama.cpp's vocabulary throws (here: a token id out of range) never crosses the C API.
    token_to_piece and detokenize give 0, no text: a negative value there means "needs a buffer
    this large", which common_token_to_piece (llama-server) negates; INT32_MIN would overflow
    and ask for 2 GiB. llama_tokenize gives INT32_MIN, llama.h's error value for it."""
    from loopcpp._lib import ffi, lib

    vocab = tiny_models["llama"]._h.vocab
    buf = ffi.new("char[]", 64)
    assert lib.llama_token_to_piece(vocab, 10**6, buf, 64, 0, False) == 0
    assert lib.llama_detokenize(vocab, ffi.new("llama_token[]", [5, 10**6]), 2, buf, 64, False, False) == 0
    assert lib.llama_token_to_piece(vocab, 5, buf, 64, 0, False) > 0  # the same calls still work


def renamed_byte_token(tiny_paths, tmp_path):
    """The tiny llama with its byte token "<0x68>" ("h") renamed: tokenizing an "h" throws inside
    llama.cpp (the fuzzer's find)."""
    data = tiny_paths["llama"].read_bytes()
    at = data.index(b"<0x68>")
    path = tmp_path / "renamed-byte.gguf"
    path.write_bytes(data[:at] + b"<0xzz>" + data[at + 6:])
    return path


def test_the_server_answers_a_vocabulary_that_throws(tiny_paths, tmp_path):
    """Served through `loopcpp serve`, the model whose tokenizer throws answers the request it
    cannot tokenize with an error, and the next requests as usual; nothing aborts."""
    httpx = pytest.importorskip("httpx")
    from test_serve import start_server, stop

    from loopcpp import serve

    try:
        serve.server_path()
    except Exception as e:  # a build without the server
        pytest.skip(str(e))
    base, proc = start_server(renamed_byte_token(tiny_paths, tmp_path), "2:4x3")
    try:
        bad = httpx.post(base + "/v1/completions", json={"prompt": "hello", "max_tokens": 4}, timeout=60)
        assert 400 <= bad.status_code < 600 and "error" in bad.json(), bad.text
        good = httpx.post(base + "/v1/completions", json={"prompt": [5, 6, 7, 40], "max_tokens": 4, "temperature": 0},
                          timeout=60)
        assert good.status_code == 200 and isinstance(good.json()["choices"][0]["text"], str), good.text
        assert httpx.get(base + "/health", timeout=10).status_code == 200 and proc.poll() is None
    finally:
        stop(proc)


def test_a_host_abort_callback_does_not_disable_the_checks(good, tiny_paths, tmp_path):
    """ggml keeps one process-wide abort callback. A host that installs its own (after loopcpp's)
    still gets a ModelLoadError for a file the loader asserts on (block_count 0), not an abort;
    its callback is kept for the aborts outside loopcpp's checks."""
    import ggufwalk

    field = next(f for f in ggufwalk.fields(good) if f.role == "value" and f.where == "llama.block_count")
    path = tmp_path / "no-layers.gguf"
    path.write_bytes(ggufwalk.rewrite(good, field, 0))
    r = run(f"""
        import ctypes, loopcpp
        loopcpp.Model({str(tiny_paths["llama"])!r}).close()  # loopcpp's callback is installed
        base = ctypes.CDLL({str(loopcpp.lib_dir() / "libggml-base.so")!r})
        host = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda msg: print("host callback:", msg.decode()))
        base.ggml_set_abort_callback.restype = ctypes.c_void_p
        base.ggml_set_abort_callback(host)
        for _ in range(2):
            try:
                loopcpp.Model({str(path)!r})
            except loopcpp.ModelLoadError as e:
                print("ERROR:", e)
    """)
    assert r.returncode == 0, f"exit {r.returncode} (negative: killed by a signal)\n{r.stdout}{r.stderr[-1500:]}"
    assert r.stdout.count("ERROR:") == 2 and "n_layer_all > 0" in r.stdout and "host callback" not in r.stdout
