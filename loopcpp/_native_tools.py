"""llama.cpp's common-library helpers through libloopcpp-tools (csrc/loopcpp-tools.cpp), loaded
on first use: builds without llama-common (LOOPCPP_BUILD_SERVER=OFF) lack it."""

from __future__ import annotations

import functools

from cffi import FFI

from ._paths import lib_dir, shared_library_name
from .errors import GrammarError, LibraryError

ffi = FFI()
ffi.cdef("int32_t loopcpp_json_schema_to_grammar(const char * schema, char * buf, size_t size, char * err, size_t err_size);")


@functools.lru_cache(maxsize=None)
def _tools():
    path = lib_dir() / shared_library_name("loopcpp-tools")
    if not path.exists():
        raise LibraryError(f"{path.name} is not in this build (it comes with llama-server: build with "
                           "LOOPCPP_BUILD_SERVER=ON); write a GBNF grammar= instead of json_schema=")
    return ffi.dlopen(str(path))


def json_schema_to_grammar(schema: str) -> str:
    """A GBNF grammar for a JSON schema (JSON text), by llama.cpp's converter; ValueError if the
    schema is malformed or uses what the converter does not support."""
    tools = _tools()
    err = ffi.new("char[]", 1024)
    data = schema.encode()
    n = tools.loopcpp_json_schema_to_grammar(data, ffi.NULL, 0, err, len(err))
    if n < 0:
        raise GrammarError(f"json_schema: {ffi.string(err).decode(errors='replace').strip()}")
    buf = ffi.new("char[]", n + 1)
    tools.loopcpp_json_schema_to_grammar(data, buf, n + 1, err, len(err))
    return ffi.string(buf, n).decode()
