"""LoopConfig: a validated loop recipe (docs/looping.md), and its spec-string form.

The spec-string grammar has one implementation, in C (llama_loop_parse), shared by the CLI, this
class, the LOOPCPP_LOOP environment variable and the GGUF key loopcpp.loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

from ._lib import ffi, lib, last_loop_error
from .errors import LoopConfigError

MODES = ("auto", "block", "layer")
INTEGRATORS = ("naive", "euler", "rk")
KV_POLICIES = ("first", "last")
MAX_STEPS = 64
OFF = "off"  # the spec string of no loop: the unmodified model


@dataclass(frozen=True)
class LoopConfig:
    """Re-run layers [start, end] `steps` (K) times per token. K = 1 is the unlooped model.

    start/end None: the default window (W = min(4, n_layer) layers centred near 0.47 of depth).
    mode "auto": block for dense models, layer for MoE models.
    decode: "bypass" (loop prompts only), "full" (every ubatch) or "first:N".
    """

    start: Optional[int] = None
    end: Optional[int] = None
    steps: int = 3
    mode: str = "auto"
    integrator: str = "rk"
    beta: float = 0.5
    kv: str = "first"
    decode: str = "bypass"
    freeze_routing: bool = False

    def __post_init__(self) -> None:
        if (self.start is None) != (self.end is None):
            raise LoopConfigError(f"give both window ends or neither: start={self.start!r}, end={self.end!r}")
        if self.start is not None and self.end is not None:  # both or neither (above)
            for name, v in (("start", self.start), ("end", self.end)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise LoopConfigError(f"{name}={v!r} must be a layer index >= 0")
            if self.start > self.end:
                raise LoopConfigError(f"window {self.start}:{self.end} has start > end")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= MAX_STEPS:
            raise LoopConfigError(f"steps (K) = {self.steps!r} is out of range: use 1 (off) to {MAX_STEPS}")
        if self.mode not in MODES:
            raise LoopConfigError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        if self.integrator not in INTEGRATORS:
            raise LoopConfigError(f"integrator={self.integrator!r} is not one of {', '.join(INTEGRATORS)}")
        if not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or not 0.0 <= self.beta <= 1.0:
            raise LoopConfigError(f"beta={self.beta!r} is outside [0, 1]")
        if self.kv not in KV_POLICIES:
            raise LoopConfigError(f"kv={self.kv!r} is not one of {', '.join(KV_POLICIES)}")
        _decode_code(self.decode)
        # what would do nothing is refused, as in the spec grammar
        if self.integrator != "rk" and self.beta != 0.5:
            raise LoopConfigError(f"beta={self.beta!r} only applies to the rk integrator, not {self.integrator}")
        if self.freeze_routing and self.mode == "layer":
            raise LoopConfigError("freeze_routing applies to block mode; layer mode always routes each MoE layer once")

    @property
    def enabled(self) -> bool:
        return self.steps > 1

    @classmethod
    def off(cls) -> "LoopConfig":
        return cls(steps=1)

    @classmethod
    def parse(cls, spec: str) -> "LoopConfig":
        """Parses "15:18x3,layer,euler", "auto", "off", ... (see README)."""
        if not isinstance(spec, str):
            raise LoopConfigError(f"a loop spec must be a string, got {spec!r}")
        p = ffi.new("struct llama_loop_params *")
        if lib.llama_loop_parse(ffi.NULL, spec.encode(), p) != 0:
            raise LoopConfigError(last_loop_error())
        return cls.from_c(p[0])

    @classmethod
    def from_c(cls, p) -> "LoopConfig":
        decode = ("bypass", "full", f"first:{p.decode_n}")[p.decode]
        window = (None, None) if p.start < 0 else (p.start, p.end)
        return cls(
            start=window[0], end=window[1], steps=p.n_steps, mode=MODES[p.mode],
            integrator=INTEGRATORS[p.integrator],
            beta=round(float(p.beta), 6) if p.integrator == INTEGRATORS.index("rk") else 0.5, kv=KV_POLICIES[p.kv],
            decode=decode, freeze_routing=bool(p.freeze_routing) and p.mode != MODES.index("layer"),
        )

    def to_c(self):
        p = ffi.new("struct llama_loop_params *")
        p.start = -1 if self.start is None else self.start
        p.end = -1 if self.end is None else self.end
        p.n_steps = self.steps
        p.mode = MODES.index(self.mode)
        p.integrator = INTEGRATORS.index(self.integrator)
        p.beta = self.beta
        p.kv = KV_POLICIES.index(self.kv)
        p.decode, p.decode_n = _decode_code(self.decode)
        p.freeze_routing = self.freeze_routing
        return p

    def replace(self, **changes) -> "LoopConfig":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        p = self.to_c()
        n = lib.llama_loop_format(p, ffi.NULL, 0)
        buf = ffi.new("char[]", n + 1)
        lib.llama_loop_format(p, buf, n + 1)
        return ffi.string(buf).decode()


def _decode_code(decode: str) -> tuple[int, int]:
    if decode == "bypass":
        return 0, 0
    if decode == "full":
        return 1, 0
    if isinstance(decode, str) and decode.startswith("first:"):
        n = decode[len("first:"):]
        if n.isdigit():
            return 2, int(n)
    raise LoopConfigError(f"decode={decode!r} is not bypass, full or first:N (N >= 0)")


LoopLike = Union[LoopConfig, str, dict, None]


def as_loop_config(loop: LoopLike) -> Optional[LoopConfig]:
    """None stays None (no loop set through the API); strings are parsed; dicts are fields."""
    if loop is None or isinstance(loop, LoopConfig):
        return loop
    if isinstance(loop, str):
        return LoopConfig.parse(loop)
    if isinstance(loop, dict):
        try:
            return LoopConfig(**loop)
        except TypeError as e:
            raise LoopConfigError(f"bad loop fields {loop!r}: {e}") from e
    raise LoopConfigError(f"loop must be a LoopConfig, a spec string or a dict, got {type(loop).__name__}")
