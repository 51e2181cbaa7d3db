"""Rewriting GGUF metadata with the `gguf` package: `loopcpp bake` stores a loop recipe in a model.

Tensors are copied byte for byte, in order, with the file's own alignment; every metadata field
is copied as it is, except the ones being set or removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from tqdm import tqdm

LOOP_KEY = "loopcpp.loop"


def copy_gguf(src: str | os.PathLike, dst: str | os.PathLike, set_strings: Optional[dict[str, str]] = None,
              remove: tuple[str, ...] = (), progress: bool = True) -> None:
    """Writes dst = src with string fields `set_strings` set and the keys in `remove` dropped."""
    import gguf

    set_strings = dict(set_strings or {})
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"the output {dst} is the input: write to another file")
    reader = gguf.GGUFReader(str(src))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    tmp = Path(str(dst) + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    try:
        for field in reader.fields.values():
            # GGUF.* are virtual fields of the reader; the writer adds the architecture itself
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            if field.name in remove or field.name in set_strings:
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        for key, value in set_strings.items():
            writer.add_string(key, value)
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with tqdm(total=sum(int(t.n_bytes) for t in reader.tensors), unit="B", unit_scale=True,
                  desc=f"write {Path(dst).name}", disable=not progress, file=sys.stderr) as bar:
            for t in reader.tensors:
                writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
                bar.update(int(t.n_bytes))
        writer.close()
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def bake(src: str | os.PathLike, dst: str | os.PathLike, spec: str, progress: bool = True) -> None:
    """Copies a GGUF and stores `spec` as its default loop (`off` removes a stored one). Loading the
    copy with loopcpp's library (any program, llama-cpp-python included) loops by default."""
    from .loop import LoopConfig

    cfg = LoopConfig.parse(spec)  # a bad recipe fails before anything is written
    if cfg.enabled:
        copy_gguf(src, dst, {LOOP_KEY: spec}, progress=progress)
    else:
        copy_gguf(src, dst, remove=(LOOP_KEY,), progress=progress)
