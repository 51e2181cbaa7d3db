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
