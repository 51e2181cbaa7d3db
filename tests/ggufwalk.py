"""Where every number in a GGUF header lies: the fuzz tests rewrite them one at a time.

A small independent walker over the GGUF v3 layout (header, key/value pairs, tensor infos). It
returns each field's byte offset, struct format and role, so a test can set a tensor's dimension,
a string's length or an array's element type to a value chosen by hypothesis.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# GGUF value types: their struct formats (8 = string, 9 = array are variable-sized).
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class Field:
    offset: int
    fmt: str  # struct format of the stored number
    role: str  # "version", "n_tensors", "n_kv", "key_len", "value_type", "str_len", "array_type",
    #            "array_len", "value", "n_dims", "dim", "tensor_type", "tensor_offset"
    where: str  # the key or tensor it belongs to

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


def fields(data: bytes) -> list[Field]:
    out: list[Field] = []
    pos = 0

    def num(fmt, role, where=""):
        nonlocal pos
        (v,) = struct.unpack_from(fmt, data, pos)
        out.append(Field(pos, fmt, role, where))
        pos += struct.calcsize(fmt)
        return v

    def string(role_len, where=""):
        nonlocal pos
        n = num("<Q", role_len, where)
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    def value(vtype, key):
        nonlocal pos
        if vtype == STRING:
            string("str_len", key)
        elif vtype == ARRAY:
            etype = num("<I", "array_type", key)
            n = num("<Q", "array_len", key)
            for _ in range(n):
                value(etype, key)
        else:
            num(SCALAR[vtype], "value", key)

    assert data[:4] == b"GGUF"
    pos = 4
    num("<I", "version")
    n_tensors = num("<Q", "n_tensors")
    n_kv = num("<Q", "n_kv")
    for _ in range(n_kv):
        key = string("key_len")
        value(num("<I", "value_type", key), key)
    for _ in range(n_tensors):
        name = string("key_len")
        for _ in range(num("<I", "n_dims", name)):
            num("<Q", "dim", name)
        num("<I", "tensor_type", name)
        num("<Q", "tensor_offset", name)
    return out


def header_end(data: bytes) -> int:
    """The first byte after the tensor infos (before alignment padding and the data)."""
    last = fields(data)[-1]
    return last.offset + last.size


def rewrite(data: bytes, field: Field, value) -> bytes:
    """data with one field set to value (wrapped to the field's width for integers)."""
    if field.fmt[-1] in "fd":
        packed = struct.pack(field.fmt, value)
    elif field.fmt[-1] == "?":
        packed = struct.pack("<B", int(value) & 0xFF)
    else:
        bits = 8 * field.size
        packed = (int(value) % (1 << bits)).to_bytes(field.size, "little")
    return data[:field.offset] + packed + data[field.offset + field.size:]
