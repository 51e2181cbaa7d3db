"""The loop C API's edges, called through cffi as a C host would call them: NULL pointers and
out-of-range enums get an error code and a message, never a crash."""

import pytest

from loopcpp._lib import ffi, last_loop_error, lib

ERR_INVALID = -1


def test_null_pointers_are_refused():
    p = ffi.new("struct llama_loop_params *")
    assert lib.llama_loop_get(ffi.NULL, p) == ERR_INVALID and "ctx" in last_loop_error()
    assert lib.llama_loop_format(ffi.NULL, ffi.NULL, 0) == ERR_INVALID and "NULL" in last_loop_error()
    assert lib.llama_loop_set(ffi.NULL, p) == ERR_INVALID
    assert lib.llama_loop_validate(ffi.NULL, p) == ERR_INVALID
    assert lib.llama_loop_parse(ffi.NULL, ffi.NULL, p) == ERR_INVALID
    assert lib.llama_loop_arch_supported(ffi.NULL) is False
    lib.llama_loop_clear(ffi.NULL)  # ignored


@pytest.mark.parametrize("field,value,needle", [
    ("integrator", 7, "integrator 7"),
    ("mode", -3, "mode -3"),
    ("kv", 9, "cache policy 9"),
    ("decode", 5, "decode mode 5"),
])
def test_format_refuses_out_of_range_enums(field, value, needle):
    p = ffi.new("struct llama_loop_params *", lib.llama_loop_default_params(ffi.NULL))
    p.n_steps = 3
    setattr(p, field, value)
    buf = ffi.new("char[]", 128)
    assert lib.llama_loop_format(p, buf, 128) == ERR_INVALID
    assert needle in last_loop_error()


def test_a_vocabulary_only_model_does_not_poison_what_its_architecture_can_do(tiny_paths):
    """llama_loop_arch_supported learns an architecture from a graph; a vocabulary-only model
    has none, so it answers false without remembering that for the architecture (run in a
    subprocess: the answer is cached per process)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        from loopcpp._internals import ModelHandle
        from loopcpp._lib import lib
        vocab = ModelHandle({str(tiny_paths["gemma3"])!r}, 0, True, True)
        full = ModelHandle({str(tiny_paths["gemma3"])!r}, 0, True, False)
        print(lib.llama_loop_arch_supported(vocab.ptr), lib.llama_loop_arch_supported(full.ptr))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split() == ["False", "True"]
