"""Model: a GGUF model loaded by llama.cpp, its metadata, tokenizer and chat template."""

from __future__ import annotations

import operator
import os
import weakref
from typing import TYPE_CHECKING, Optional, Sequence

from ._internals import ModelHandle, apply_chat_template
from .loop import LoopConfig

if TYPE_CHECKING:
    from .context import Context

# llama.cpp's built-in template used when a GGUF has no chat template of its own, by architecture.
FALLBACK_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}
DEFAULT_FALLBACK_TEMPLATE = "chatml"


class Model:
    """A GGUF model. `Model(path, n_gpu_layers=0)`; use as a context manager or call close().

    `repack=False` keeps weights in their file layout instead of the CPU's repacked one (AMX,
    AVX-512 or NEON tiles), e.g. to compare the two matmul paths.

    >>> with Model("SmolLM2-135M-Instruct.Q4_1.gguf") as model:
    ...     with model.context(n_ctx=2048, loop="auto") as ctx:
    ...         print(ctx.chat([{"role": "user", "content": "Hi"}]))
    """

    def __init__(self, path: str | os.PathLike, n_gpu_layers: int = 0, use_mmap: bool = True,
                 vocab_only: bool = False, repack: bool = True) -> None:
        if not isinstance(n_gpu_layers, int):
            raise TypeError(f"n_gpu_layers must be an int, got {n_gpu_layers!r}")
        self.path = os.fspath(path)
        self._h = ModelHandle(self.path, n_gpu_layers, use_mmap, vocab_only, repack)
        self._contexts: "weakref.WeakSet[Context]" = weakref.WeakSet()
        self.metadata: dict[str, str] = self._h.metadata()
        self.arch: str = self.metadata.get("general.architecture", "unknown")
        self.n_layer: int = self._h.n_layer()
        self.n_embd: int = self._h.n_embd()
        self.n_head: int = self._h.n_head()
        self.n_head_kv: int = self._h.n_head_kv()
        self.n_vocab: int = self._h.n_vocab()
        self.n_ctx_train: int = self._h.n_ctx_train()
        self.n_swa: int = self._h.n_swa()
        self.n_expert: int = int(self.metadata.get(f"{self.arch}.expert_count", 0) or 0)
        self.n_expert_used: int = int(self.metadata.get(f"{self.arch}.expert_used_count", 0) or 0)
        self.size: int = self._h.size()
        self.n_params: int = self._h.n_params()
        self.description: str = self._h.desc()
        self.bos: int = self._h.bos()
        self.eos: int = self._h.eos()
        self.add_bos: bool = self._h.add_bos()  # whether tokenize(add_special=True) starts with BOS

    # --- loops -------------------------------------------------------------------------------
    @property
    def loop_supported(self) -> bool:
        """Whether this architecture has a loop-capable graph builder."""
        return self._h.loop_supported()

    @property
    def default_loop(self) -> LoopConfig:
        """The out-of-the-box recipe for this model, with its window resolved."""
        return LoopConfig.from_c(self._h.default_loop())

    # --- text --------------------------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return self._h.tokenize(data, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        tokens = self._check_tokens(tokens)
        return self._h.detokenize(tokens, remove_special, unparse_special).decode("utf-8", errors="replace")

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        self._check_tokens([token])
        return self._h.token_to_piece(token, special)

    def is_eog(self, token: int) -> bool:
        return self._h.is_eog(token)

    def _check_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The tokens as Python ints; ValueError names the first one outside the vocabulary."""
        out = []
        for t in tokens:
            try:
                i = operator.index(t)
            except TypeError:
                raise ValueError(f"token {t!r} is not an integer") from None
            if not 0 <= i < self.n_vocab:
                raise ValueError(f"token {i} is outside the vocabulary [0, {self.n_vocab})")
            out.append(i)
        return out

    @property
    def chat_template(self) -> Optional[str]:
        return self._h.chat_template()

    def apply_chat_template(self, messages: Sequence[dict], add_assistant: bool = True) -> str:
        """Formats messages ([{"role": ..., "content": ...}]) with the model's chat template."""
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"a chat message needs 'role' and 'content', got {m!r}")
        template = self.chat_template or FALLBACK_TEMPLATES.get(self.arch, DEFAULT_FALLBACK_TEMPLATE)
        return apply_chat_template(template, messages, add_assistant)

    # --- contexts ----------------------------------------------------------------------------
    def context(self, **kwargs) -> "Context":
        """A new inference context; see Context for the parameters (n_ctx, n_batch, loop, ...)."""
        from .context import Context

        return Context(self, **kwargs)

    def close(self) -> None:
        for ctx in list(self._contexts):
            ctx.close()
        self._h.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.path!r}, arch={self.arch}, n_layer={self.n_layer}, n_embd={self.n_embd})"
