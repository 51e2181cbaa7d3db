"""Rewriting GGUF metadata with the `gguf` package: `loopcpp bake` stores a loop recipe in a model.

Tensors are copied byte for byte, in order, with the file's own alignment; every metadata field
is copied as it is, except the ones being set or removed.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

LOOP_KEY = "loopcpp.loop"
# Per-layer arrays outside the architecture's own keys (Apertus's xIELU activation parameters)
PER_LAYER_PREFIXES = ("xielu.",)
# Keys that count the model's last layers (gemma4's KV-sharing layers: llama.cpp makes the layers from
# position n_layer - count on share, reading the cache of the one or two layers just before them)
LAST_LAYER_COUNTS = ("attention.shared_kv_layers",)


def read_field(reader, key: str):
    """The value of `key` in a gguf.GGUFReader's file; ValueError naming the key if it has none."""
    field = reader.get_field(key)
    if field is None:
        raise ValueError(f"the GGUF has no {key!r}")
    return field.contents()


def copy_gguf(src: str | os.PathLike, dst: str | os.PathLike, set_strings: Optional[dict[str, str]] = None,
              remove: tuple[str, ...] = (), progress: bool = True, layers: Optional[list[int]] = None,
              set_arrays: Optional[dict[str, list]] = None) -> None:
    """Writes dst = src with string fields `set_strings` (and array fields `set_arrays`) set and
    the keys in `remove` dropped.

    layers: the source layer of each layer of dst (e.g. [0, 1, 2, 1, 2, 3] repeats layers 1..2):
    block tensors are copied under their new index, and the block count and every per-layer
    metadata array follow."""
    import gguf

    set_strings = dict(set_strings or {})
    set_arrays = dict(set_arrays or {})
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"the output {dst} is the input: write to another file")
    reader = gguf.GGUFReader(str(src))
    arch = read_field(reader, gguf.Keys.General.ARCHITECTURE)
    tmp = Path(str(dst) + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    n_layer = read_field(reader, f"{arch}.block_count")
    try:
        for field in reader.fields.values():
            # GGUF.* are virtual fields of the reader; the writer adds the architecture itself
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            if field.name in remove or field.name in set_strings or field.name in set_arrays:
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if layers is not None and field.name == f"{arch}.block_count":
                value = len(layers)
            elif layers is not None and sub is not None and field.name.startswith((f"{arch}.", *PER_LAYER_PREFIXES)) \
                    and len(value) == n_layer:
                value = [value[i] for i in layers]  # a per-layer array
            elif layers is not None and field.name.removeprefix(f"{arch}.") in LAST_LAYER_COUNTS:
                value = _last_layer_count(field.name, value, n_layer, layers)
            writer.add_key_value(field.name, value, kind, sub_type=sub)
        for key, value in set_strings.items():
            writer.add_string(key, value)
        for key, value in set_arrays.items():
            writer.add_array(key, value)
        tensors = _layer_tensors(reader.tensors, layers) if layers is not None else [(t.name, t) for t in reader.tensors]
        for name, t in tensors:
            writer.add_tensor_info(name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with tqdm(total=sum(int(t.n_bytes) for _, t in tensors), unit="B", unit_scale=True,
                  desc=f"write {Path(dst).name}", disable=not progress, file=sys.stderr) as bar:
            for _, t in tensors:
                writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
                bar.update(int(t.n_bytes))
        writer.close()
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _last_layer_count(key: str, count: int, n_layer: int, layers: list[int]) -> int:
    """The count of a LAST_LAYER_COUNTS key in a file of `layers`: every copy of a counted layer
    counts where its source does. llama.cpp reads the count by position, so the counted copies must
    end the file and the two layers before them must be the ones before the counted layers."""
    first = n_layer - count
    counted = [i >= first for i in layers]
    new = sum(counted)
    before, lead = layers[: len(layers) - new], [i for i in range(first - 2, first) if i >= 0]
    if count and (counted != [False] * len(before) + [True] * new or before[len(before) - len(lead):] != lead):
        raise ValueError(f"{key} = {count}: layers {first}.. read the cache of the layers just before them, by "
                         f"position, and this layer order ({layers}) moves them: it must end in copies of layers "
                         f"{first}.. only, right after layers {lead}")
    return new


def _layer_tensors(tensors, layers: list[int]) -> list[tuple[str, Any]]:
    """(new name, tensor) in the new layer order; tensors outside the blocks keep their place
    (those before the first block first, the rest after the last)."""
    by_layer: dict[int, list] = {}
    head: list = []
    tail: list = []
    for t in tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and parts[1].isdigit():
            by_layer.setdefault(int(parts[1]), []).append(t)
        else:
            (tail if by_layer else head).append(t)
    out = [(t.name, t) for t in head]
    for new, old in enumerate(layers):
        out += [(f"blk.{new}." + t.name.split(".", 2)[2], t) for t in by_layer[old]]
    out += [(t.name, t) for t in tail]
    return [(name, _sliced(t, len(by_layer), layers)) if name in PER_LAYER_SLICES else (name, t) for name, t in out]


# Tensors outside the blocks that hold one slice per layer, layer-major along a numpy axis (gemma3n's
# and gemma4's per-layer embeddings): a new layer order reorders their slices too.
PER_LAYER_SLICES = {"per_layer_token_embd.weight": -1, "per_layer_model_proj.weight": 0}


class _SlicedTensor:
    def __init__(self, t, data):
        self.name, self.tensor_type, self.data, self.n_bytes = t.name, t.tensor_type, data, data.nbytes


def _sliced(t, n_layer: int, layers: list[int]) -> _SlicedTensor:
    import numpy as np

    a = np.moveaxis(np.asarray(t.data), PER_LAYER_SLICES[t.name], 0)  # quantized: whole blocks per slice
    a = a.reshape(n_layer, -1, *a.shape[1:])[layers].reshape(-1, *a.shape[1:])
    return _SlicedTensor(t, np.ascontiguousarray(np.moveaxis(a, 0, PER_LAYER_SLICES[t.name])))


# Architectures whose sliding-window layers follow a pattern by layer index unless the file gives
# one per layer (llama.cpp's default period, whether the first layer of each period is the global
# one, and whether the model slides without a `sliding_window` key): reordering layers must then
# write the pattern out per layer.
SWA_PATTERNS = {"cohere2": (4, False), "exaone4": (4, False), "gemma2": (2, False), "gemma3": (6, False),
                "gpt-oss": (2, False), "olmo2": (4, False), "llama4": (4, False), "smallthinker": (4, True),
                "plamo3": (8, False), "mellum": (4, False), "exaone-moe": (4, False), "cohere2moe": (4, True),
                "afmoe": (4, False), "laguna": (4, True), "muse-glimmer": (4, False)}
SLIDES_BY_DEFAULT = ("gemma2", "gemma3", "llama4")  # llama4: chunked unless sliding_window is 0
# Per-layer choices llama.cpp makes from the layer index alone, with no GGUF key to state them per
# layer (e.g. which layers skip RoPE): a reordered model keeps them only when every layer moves by
# a multiple of the period.
INDEX_PERIODS = {"smollm3": 4, "llama4": 4, "afmoe": 4}


def swa_pattern(arch: str, reader, n_layer: int) -> Optional[list[bool]]:
    """The sliding-window flag of each layer, when the file gives the pattern by period only."""
    import gguf

    if arch not in SWA_PATTERNS:
        return None
    window = reader.get_field(f"{arch}.attention.sliding_window")
    if window is None and arch not in SLIDES_BY_DEFAULT or window is not None and window.contents() == 0:
        return None
    field = reader.get_field(f"{arch}.attention.sliding_window_pattern")
    if field is not None and field.types[0] == gguf.GGUFValueType.ARRAY:
        return None  # already per layer: copy_gguf reorders it
    n, dense_first = SWA_PATTERNS[arch]
    n = n if field is None else int(field.contents())
    if dense_first:  # llama_hparams::set_swa_pattern
        return [n == 0 or i % n != 0 for i in range(n_layer)]
    return [n == 0 or i % n < n - 1 for i in range(n_layer)]


def reorder_layers(src: str | os.PathLike, dst: str | os.PathLike, layers: list[int], progress: bool = True) -> None:
    """A GGUF whose layer i is the source's layer layers[i] (repeats allowed), run by the
    unmodified model: every per-layer array follows, and a sliding-window pattern given by
    period becomes an explicit per-layer one, so each layer keeps its attention type."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = read_field(reader, gguf.Keys.General.ARCHITECTURE)
    n_layer = read_field(reader, f"{arch}.block_count")
    if not layers or any(not 0 <= i < n_layer for i in layers):
        raise ValueError(f"layers {layers} do not fit {n_layer} layers")
    extra: dict = {}
    pattern = swa_pattern(arch, reader, n_layer)
    if pattern is not None:
        extra[f"{arch}.attention.sliding_window_pattern"] = [pattern[i] for i in layers]
    period = INDEX_PERIODS.get(arch)
    if period and any((new - old) % period for new, old in enumerate(layers)):
        warnings.warn(f"{arch} chooses some per-layer settings (e.g. which layers skip RoPE) by layer index "
                      f"every {period} layers; this layer order moves layers by other amounts, so those "
                      f"settings change", stacklevel=3)
    del reader
    copy_gguf(src, dst, progress=progress, layers=layers, set_arrays=extra)


def duplicate_layers(src: str | os.PathLike, dst: str | os.PathLike, start: int, end: int, repeats: int,
                     progress: bool = True, layerwise: bool = False) -> list[int]:
    """A "self-merge" GGUF: layers start..end physically repeated `repeats` times (mergekit's
    passthrough; layerwise: each layer repeated in place), run by the unmodified model. Returns
    the source layer of each new layer."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = read_field(reader, gguf.Keys.General.ARCHITECTURE)
    n_layer = read_field(reader, f"{arch}.block_count")
    del reader
    if not (0 <= start <= end < n_layer) or repeats < 1:
        raise ValueError(f"window {start}:{end}x{repeats} does not fit {n_layer} layers")
    window = ([i for i in range(start, end + 1) for _ in range(repeats)] if layerwise
              else list(range(start, end + 1)) * repeats)
    layers = list(range(start)) + window + list(range(end + 1, n_layer))
    reorder_layers(src, dst, layers, progress=progress)
    return layers


def bake(src: str | os.PathLike, dst: str | os.PathLike, spec: str, progress: bool = True) -> None:
    """Copies a GGUF and stores `spec` as its default loop (`off` removes a stored one). Loading the
    copy with loopcpp's library (any program, llama-cpp-python included) loops by default."""
    from .loop import LoopConfig

    cfg = LoopConfig.parse(spec)  # a bad recipe fails before anything is written
    if cfg.enabled:
        copy_gguf(src, dst, {LOOP_KEY: spec}, progress=progress)
    else:
        copy_gguf(src, dst, remove=(LOOP_KEY,), progress=progress)
