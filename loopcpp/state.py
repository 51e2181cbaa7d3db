"""The saved-state format: llama.cpp's state bytes behind a small JSON header that records what
they were built under (the model, the loop, the tokens), so a restore can check it.

    b"LOOPCPP-STATE\\0" | u32 header length (little endian) | header JSON | llama.cpp state
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Optional, Sequence

from . import __version__
from .errors import StateError

if TYPE_CHECKING:
    from .context import Context
    from .model import Model

MAGIC = b"LOOPCPP-STATE\0"
FORMAT = 1


def _model_id(model: "Model") -> dict:
    return {"description": model.description, "n_params": model.n_params, "n_layer": model.n_layer,
            "n_vocab": model.n_vocab}


def pack(ctx: "Context", blob: bytes, seq: Optional[int], tokens: Sequence[int], ubatch_starts: Sequence[int],
         several_sequences: bool = False) -> bytes:
    header = {"format": FORMAT, "loopcpp": __version__, "model": _model_id(ctx.model), "loop": str(ctx.loop),
              "seq": seq, "tokens": list(tokens), "ubatch_starts": list(ubatch_starts),
              "several_sequences": several_sequences}
    raw = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + blob


def unpack(data: bytes, model: "Model") -> tuple[dict, bytes]:
    """The header and llama.cpp's bytes; StateError if the data is not a state of this model."""
    data = bytes(data)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise StateError("these bytes are not a loopcpp state (save them with Context.save_state())")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + n])
        fmt = header["format"]
        saved_model = header["model"]
        header["loop"], header["seq"], header["tokens"], header["ubatch_starts"]
    except (ValueError, KeyError, TypeError):  # not JSON, not an object, a field missing
        raise StateError("the state's header is damaged") from None
    if fmt != FORMAT:
        raise StateError(f"state format {fmt!r} is not {FORMAT}: saved by another loopcpp version")
    if saved_model != _model_id(model):
        raise StateError(f"the state was saved with model '{saved_model.get('description')}' "
                         f"({saved_model.get('n_params')} parameters), not this one ({model.description})")
    return header, data[start + n:]
