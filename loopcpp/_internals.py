"""Thin owners of native objects. Only this module (and loop.py) talk to the C library.

Each owner frees its object exactly once: on close(), on leaving a `with` block, or when it is
garbage-collected. Owners above this layer never see a pointer.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from ._batch import fill_sequence
from ._lib import ffi, lib, log, last_loop_error
from .errors import (
    CancelledError, ClosedError, ContextError, DecodeError, GrammarError, LoadCancelledError, LoopConfigError,
    ModelLoadError, TokenizeError,
)

_CALL_FAILED = -2**31  # INT32_MIN: the vocabulary calls' error value (see llama-vocab.cpp)


def _sized_call(ctype: str, cap: int, call):
    """call(buf, cap) with a buffer of cap items; llama.cpp answers -needed when it is too small,
    so retry once at that size. Returns (buf, n)."""
    buf = ffi.new(f"{ctype}[]", cap)
    n = call(buf, cap)
    if n < 0 and n != _CALL_FAILED:
        buf = ffi.new(f"{ctype}[]", -n)
        n = call(buf, -n)
    return buf, n


class _Owner:
    _ptr = ffi.NULL
    what = "object"  # how errors name it

    def _free(self, ptr) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def ptr(self):
        """The native pointer; every use goes through here, so a closed owner raises instead of
        handing llama.cpp a freed object."""
        if self._ptr == ffi.NULL:
            raise ClosedError(f"this {self.what} is closed")
        return self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, ffi.NULL
        if ptr != ffi.NULL:
            self._free(ptr)

    @property
    def closed(self) -> bool:
        return self._ptr == ffi.NULL

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# enum ggml_backend_dev_type
_DEV_GPU, _DEV_IGPU = 1, 2
_MAX_RPC_DEVICES = 16


def _is_rpc(dev) -> bool:
    return ffi.string(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev))) == b"RPC"


def rpc_devices(endpoint: str) -> list:
    """The devices of the ggml-rpc-server at endpoint ("host:port"), registered with ggml once."""
    if not isinstance(endpoint, str) or ":" not in endpoint:
        raise ValueError(f"RPC endpoint {endpoint!r} must be \"host:port\"")
    buf = ffi.new("void *[]", _MAX_RPC_DEVICES)
    n = lib.llama_loop_rpc_add_server(endpoint.encode(), buf, _MAX_RPC_DEVICES)
    if n < 0:
        raise ModelLoadError(f"{last_loop_error()} (start one with `loopcpp rpc-server --port PORT` on that host)")
    return [buf[i] for i in range(min(n, _MAX_RPC_DEVICES))]


def model_devices(rpc: Sequence[str]):
    """llama_model_params.devices: None (llama.cpp's default, every GPU) unless RPC servers are in
    play: then the RPC devices of `rpc` first (fewer transfers, as llama.cpp orders them) and the
    local GPUs, so that a model asks for no server another model registered."""
    chosen = [d for endpoint in rpc for d in rpc_devices(endpoint)]
    devices = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    if not chosen and not any(_is_rpc(d) for d in devices):
        return None
    local = [d for d in devices if lib.ggml_backend_dev_type(d) in (_DEV_GPU, _DEV_IGPU) and not _is_rpc(d)]
    return ffi.new("void *[]", chosen + local + [ffi.NULL])


class ModelHandle(_Owner):
    what = "Model"

    def __init__(self, path: str, n_gpu_layers: int, use_mmap: bool, vocab_only: bool, repack: bool = True,
                 use_mlock: bool = False, rpc: Sequence[str] = (), tensor_split: Sequence[float] = (),
                 progress: Optional[Callable[[float], Optional[bool]]] = None) -> None:
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}")
        params = lib.llama_model_default_params()
        outcome: dict = {}  # what the progress callback saw: a cancel, or its own exception
        if progress is not None:
            @ffi.callback("bool(float, void *)")
            def on_progress(fraction, _user_data):
                try:
                    go_on = progress(float(fraction)) is not False
                except BaseException as e:  # never across llama.cpp's frames: stop, raise below
                    outcome["error"] = e
                    return False
                outcome["cancelled"] = not go_on
                return go_on

            params.progress_callback = ffi.cast("void *", on_progress)
        self._devices = model_devices(rpc)  # kept alive: llama.cpp reads it while loading
        if self._devices is not None:
            params.devices = self._devices
        if tensor_split:
            self._split = ffi.new("float[]", list(tensor_split) + [0.0] * (128 - len(tensor_split)))
            params.tensor_split = self._split
        params.n_gpu_layers = n_gpu_layers
        params.vocab_only = vocab_only
        params.use_extra_bufts = repack
        if not use_mmap or use_mlock:  # llama_load_mode: NONE 0 (read into memory), MLOCK 2, MMAP_MLOCK 3
            params.load_mode = (3 if use_mmap else 2) if use_mlock else 0
        log.clear()
        ptr = lib.llama_model_load_from_file(os.fsencode(path), params)
        if ptr == ffi.NULL:
            if "error" in outcome:
                raise outcome["error"]
            if outcome.get("cancelled"):
                raise LoadCancelledError(f"loading {path} was cancelled by its progress callback")
            reason = log.recent_errors() or "llama.cpp could not load it"
            raise ModelLoadError(f"could not load model {path}: {reason}")
        self._ptr = ptr
        self._vocab = lib.llama_model_get_vocab(ptr)
        self._eog: Optional[tuple[int, ...]] = None  # eog_tokens(), found on first use

    @property
    def vocab(self):
        self.ptr  # the vocabulary is freed with the model
        return self._vocab

    def _free(self, ptr) -> None:
        lib.llama_model_free(ptr)

    # metadata
    def n_layer(self) -> int: return lib.llama_model_n_layer(self.ptr)
    def n_embd(self) -> int: return lib.llama_model_n_embd(self.ptr)
    def n_head(self) -> int: return lib.llama_model_n_head(self.ptr)
    def n_head_kv(self) -> int: return lib.llama_model_n_head_kv(self.ptr)
    def n_ctx_train(self) -> int: return lib.llama_model_n_ctx_train(self.ptr)
    def n_swa(self) -> int: return lib.llama_model_n_swa(self.ptr)
    def n_vocab(self) -> int: return lib.llama_vocab_n_tokens(self.vocab)
    def size(self) -> int: return lib.llama_model_size(self.ptr)
    def n_params(self) -> int: return lib.llama_model_n_params(self.ptr)
    def bos(self) -> int: return lib.llama_vocab_bos(self.vocab)
    def eos(self) -> int: return lib.llama_vocab_eos(self.vocab)
    def add_bos(self) -> bool: return bool(lib.llama_vocab_get_add_bos(self.vocab))
    def is_eog(self, token: int) -> bool: return bool(lib.llama_vocab_is_eog(self.vocab, token))

    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token of the vocabulary (found once, then kept)."""
        if self._eog is None:
            vocab, is_eog = self.vocab, lib.llama_vocab_is_eog
            self._eog = tuple(t for t in range(self.n_vocab()) if is_eog(vocab, t))
        return self._eog

    def loop_supported(self) -> bool: return bool(lib.llama_loop_arch_supported(self.ptr))

    def loop_refusal(self) -> str:
        """Why a loop is refused for this model ("" if it can loop), in llama_loop_validate's words."""
        params = lib.llama_loop_default_params(self.ptr)
        params.n_steps = 2
        return "" if lib.llama_loop_validate(self.ptr, ffi.new("struct llama_loop_params *", params)) == 0 else last_loop_error()

    def desc(self) -> str:
        buf = ffi.new("char[]", 256)
        lib.llama_model_desc(self.ptr, buf, 256)
        return ffi.string(buf).decode(errors="replace")

    def metadata(self) -> dict[str, str]:
        out = {}
        key = ffi.new("char[]", 256)
        for i in range(lib.llama_model_meta_count(self.ptr)):
            lib.llama_model_meta_key_by_index(self.ptr, i, key, 256)
            n = lib.llama_model_meta_val_str_by_index(self.ptr, i, ffi.NULL, 0)
            val = ffi.new("char[]", max(n, 0) + 1)
            lib.llama_model_meta_val_str_by_index(self.ptr, i, val, max(n, 0) + 1)
            out[ffi.string(key).decode(errors="replace")] = ffi.string(val).decode(errors="replace")
        return out

    def chat_template(self) -> Optional[str]:
        t = lib.llama_model_chat_template(self.ptr, ffi.NULL)
        return None if t == ffi.NULL else ffi.string(t).decode(errors="replace")

    def tokenize(self, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
        buf, n = _sized_call("llama_token", len(text) + 8, lambda b, cap: lib.llama_tokenize(
            self.vocab, text, len(text), b, cap, add_special, parse_special))
        if n < 0:
            raise TokenizeError(f"tokenization failed: {log.recent_errors(1) or 'see the llama.cpp log'}")
        return list(ffi.unpack(buf, n))

    def token_to_piece(self, token: int, special: bool) -> bytes:
        buf, n = _sized_call("char", 64, lambda b, cap: lib.llama_token_to_piece(self.vocab, token, b, cap, 0, special))
        return ffi.unpack(buf, max(n, 0))

    def detokenize(self, tokens: Sequence[int], remove_special: bool, unparse_special: bool) -> bytes:
        arr = ffi.new("llama_token[]", list(tokens))
        buf, n = _sized_call("char", 8 * len(tokens) + 16, lambda b, cap: lib.llama_detokenize(
            self.vocab, arr, len(tokens), b, cap, remove_special, unparse_special))
        return ffi.unpack(buf, max(n, 0))

    def default_loop(self):
        return lib.llama_loop_default_params(self.ptr)


def apply_builtin_template(name: str, messages: Sequence[dict], add_assistant: bool) -> str:
    """Renders messages with one of llama.cpp's built-in templates (llama_chat_apply_template)."""
    keep = []  # the C strings must outlive the call
    chat = ffi.new("struct llama_chat_message[]", len(messages))
    for i, m in enumerate(messages):
        role = ffi.new("char[]", str(m["role"]).encode())
        content = ffi.new("char[]", str(m["content"]).encode())
        keep += [role, content]
        chat[i].role, chat[i].content = role, content
    tmpl = name.encode()
    cap = 4096 + sum(len(str(m["content"])) * 2 for m in messages)
    buf = ffi.new("char[]", cap)
    n = lib.llama_chat_apply_template(tmpl, chat, len(messages), add_assistant, buf, cap)
    if n > cap:
        buf = ffi.new("char[]", n)
        n = lib.llama_chat_apply_template(tmpl, chat, len(messages), add_assistant, buf, n)
    if n < 0:
        raise ValueError(f"llama.cpp has no built-in chat template {name!r}")
    return ffi.unpack(buf, n).decode("utf-8", errors="replace")


_builtin_names: list[str] = []


def builtin_template_names() -> list[str]:
    """The names of llama.cpp's built-in chat templates ("chatml", "llama3", "gemma", ...)."""
    if not _builtin_names:
        n = lib.llama_chat_builtin_templates(ffi.NULL, 0)
        out = ffi.new("const char *[]", n)
        lib.llama_chat_builtin_templates(out, n)
        _builtin_names.extend(ffi.string(out[i]).decode() for i in range(n))
    return _builtin_names


class TensorTap:
    """llama.cpp's eval callback, keeping copies of the graph tensors whose names are asked for
    (e.g. "l_out-16", a layer's output) in the order the graph computes them. F32 tensors only."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)
        self.captured: dict[str, list[np.ndarray]] = {}
        self.asked = 0  # graph nodes the backends ran since the count was last reset
        self.callback = ffi.callback("bool(void *, bool, void *)", self._on_tensor)

    def reset(self) -> None:
        """Before an evaluation: `captured` and `asked` then describe that evaluation only."""
        self.captured.clear()
        self.asked = 0

    def _on_tensor(self, tensor, ask, _user_data) -> bool:
        if ask:
            self.asked += 1
            return bool(self.names) and ffi.string(lib.ggml_get_name(tensor)).decode() in self.names
        name = ffi.string(lib.ggml_get_name(tensor)).decode()
        n = lib.ggml_nelements(tensor)
        if lib.ggml_nbytes(tensor) == 4 * n:
            buf = np.empty(n, dtype=np.float32)
            lib.ggml_backend_tensor_get(tensor, ffi.from_buffer(buf), 0, 4 * n)
            self.captured.setdefault(name, []).append(buf)
        return True


class ContextHandle(_Owner):
    what = "Context"

    def __init__(self, model: ModelHandle, n_ctx: int, n_batch: int, n_ubatch: int, n_threads: int,
                 n_threads_batch: int, type_k: Optional[int], type_v: Optional[int],
                 flash_attn: Optional[bool], tap: Optional[TensorTap] = None, n_seq_max: int = 1,
                 pooling: Optional[int] = None) -> None:
        model_ptr = model.ptr  # a closed model raises here, not inside llama.cpp
        params = lib.llama_context_default_params()
        if tap is not None:
            params.cb_eval = ffi.cast("void *", tap.callback)
            self.tap = tap  # the callback must live as long as the context
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_threads = n_threads
        params.n_seq_max = n_seq_max
        # one cache for all sequences: a batch is then split into ubatches in its own order
        # (split_simple), so rows of several sequences can share a ubatch
        params.kv_unified = n_seq_max > 1
        params.n_threads_batch = n_threads_batch
        if type_k is not None:
            params.type_k = type_k
        if type_v is not None:
            params.type_v = type_v
        if flash_attn is not None:
            params.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / DISABLED
        if pooling is not None:  # an embeddings context: pooled vectors instead of logits
            params.embeddings = True
            params.pooling_type = pooling
        # cancel(): compute stops at its next graph node once the flag is set (from any thread)
        self._abort_flag = ffi.new("int32_t *")
        params.abort_callback = ffi.cast("void *", ffi.addressof(lib.load(), "llama_loop_abort_on_flag"))
        params.abort_callback_data = self._abort_flag
        log.clear()
        ptr = lib.llama_init_from_model(model_ptr, params)
        if ptr == ffi.NULL:
            reason = log.recent_errors(1).split("failed to initialize the context: ")[-1]
            reason = reason or "llama.cpp refused the parameters"
            raise ContextError(f"could not create a context: {reason}")
        self._ptr = ptr
        self.model = model  # the model must outlive its contexts
        self.n_ctx = lib.llama_n_ctx(ptr)
        self.n_batch = lib.llama_n_batch(ptr)
        self.n_ubatch = lib.llama_n_ubatch(ptr)
        self.n_vocab = model.n_vocab()
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self.has_logits = False  # whether the last decode computed logits for its last token

    def perf(self) -> dict:
        d = lib.llama_perf_context(self.ptr)
        return {"n_prompt": d.n_p_eval, "n_eval": d.n_eval, "graphs_reused": d.n_reused}

    def perf_reset(self) -> None:
        lib.llama_perf_context_reset(self.ptr)

    def memory(self) -> dict:
        out = ffi.new("struct llama_loop_memory *")
        if lib.llama_loop_get_memory(self.ptr, out) != 0:
            raise ContextError(last_loop_error())
        return {"model": out.model, "kv": out.context, "compute": out.compute, "graph_meta": out.graph_meta,
                "graph_max_nodes": out.graph_max_nodes}

    @property
    def ptr(self):
        ptr = _Owner.ptr.fget(self)
        self.model.ptr  # a context never outlives its model's weights
        return ptr

    def _free(self, ptr) -> None:
        lib.llama_batch_free(self._batch)
        lib.llama_free(ptr)

    def set_cancelled(self, on: bool) -> None:
        self._abort_flag[0] = 1 if on else 0

    @property
    def cancelled(self) -> bool:
        return bool(self._abort_flag[0])

    def embeddings_seq(self, seq: int, n_embd: int) -> np.ndarray:
        """The pooled embedding of sequence `seq` after the last decode."""
        p = lib.llama_get_embeddings_seq(self.ptr, seq)
        if p == ffi.NULL:
            raise DecodeError(f"llama.cpp returned no embedding for sequence {seq}")
        return np.frombuffer(ffi.buffer(p, 4 * n_embd), dtype=np.float32).copy()

    def decode(self, tokens: Sequence[int], pos0: int, want: str) -> Optional[np.ndarray]:
        """Evaluates tokens at positions pos0..; returns logits for "all", "last" or "none";
        "sample" computes the last logits for the sampler without copying them out."""
        ctx = self.ptr  # before touching the batch, which is freed with the context
        self.has_logits = False
        out: list[np.ndarray] = []  # with want="all"
        n = len(tokens)
        for start in range(0, n, self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            b = self._batch
            fill_sequence(b, chunk, pos0 + start, [want == "all" or (want in ("last", "sample") and start + i == n - 1)
                                                   for i in range(len(chunk))])
            log.clear()  # so that an error message quotes this decode's log only
            rc = lib.llama_decode(ctx, b)
            if rc != 0:
                raise _decode_failure(rc)
            if want == "all":
                out.append(self._logits_at(range(len(chunk))))
        self.has_logits = want != "none"
        if want == "all":
            return np.concatenate(out, axis=0)
        if want == "last":
            return self._logits_at([-1])[0]
        return None

    def decode_rows(self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[Sequence[int]],
                    want: Sequence[bool], read_logits: bool = True) -> np.ndarray:
        """One llama_decode of rows from any sequences: row i is tokens[i] at positions[i] in the
        sequences seq_ids[i]. Returns the logits of the rows flagged in want, in row order
        (none with read_logits=False: an embeddings context outputs vectors instead)."""
        ctx = self.ptr
        n = len(tokens)
        n_seq = max(len(s) for s in seq_ids)
        batch = lib.llama_batch_init(n, 0, n_seq)
        try:
            batch.n_tokens = n
            for i in range(n):
                batch.token[i] = tokens[i]
                batch.pos[i] = positions[i]
                batch.n_seq_id[i] = len(seq_ids[i])
                for j, s in enumerate(seq_ids[i]):
                    batch.seq_id[i][j] = s
                batch.logits[i] = 1 if want[i] else 0
            log.clear()
            self.has_logits = False
            rc = lib.llama_decode(ctx, batch)
            if rc != 0:
                raise _decode_failure(rc)
        finally:
            lib.llama_batch_free(batch)
        if not read_logits:
            return np.empty((0, self.n_vocab), np.float32)
        return self._logits_at([i for i in range(n) if want[i]])

    def _logits_at(self, indices: Sequence[int]) -> np.ndarray:
        """The logits of the last decode's batch rows `indices` (-1: the last row with logits)."""
        indices = list(indices)
        rows = np.empty((len(indices), self.n_vocab), dtype=np.float32)
        for r, idx in enumerate(indices):
            p = lib.llama_get_logits_ith(self.ptr, idx)
            if p == ffi.NULL:
                raise DecodeError("llama.cpp returned no logits for this position")
            rows[r] = np.frombuffer(ffi.buffer(p, 4 * self.n_vocab), dtype=np.float32)
        return rows

    def memory_clear(self) -> None:
        lib.llama_memory_clear(lib.llama_get_memory(self.ptr), True)
        self.has_logits = False

    def seq_rm(self, p0: int) -> bool:
        return self.seq_rm_of(0, p0)

    def seq_rm_of(self, seq: int, p0: int) -> bool:
        """Removes positions >= p0 of sequence seq from the cache."""
        return bool(lib.llama_memory_seq_rm(lib.llama_get_memory(self.ptr), seq, p0, -1))

    def pos_max(self) -> int:
        return lib.llama_memory_seq_pos_max(lib.llama_get_memory(self.ptr), 0)

    def state_get(self, seq: Optional[int] = None) -> bytes:
        """llama.cpp's serialized state: the whole context's, or one sequence's cache."""
        ctx = self.ptr
        n = lib.llama_state_get_size(ctx) if seq is None else lib.llama_state_seq_get_size(ctx, seq)
        buf = ffi.new("uint8_t[]", n)
        n = lib.llama_state_get_data(ctx, buf, n) if seq is None else lib.llama_state_seq_get_data(ctx, buf, n, seq)
        return bytes(ffi.buffer(buf, n))

    def state_set(self, data: bytes, seq: Optional[int] = None) -> None:
        ctx = self.ptr
        log.clear()
        n = (lib.llama_state_set_data(ctx, data, len(data)) if seq is None
             else lib.llama_state_seq_set_data(ctx, data, len(data), seq))
        self.has_logits = False
        if n == 0:
            raise ContextError(f"llama.cpp could not restore the state: {log.recent_errors() or 'it does not fit this context'}")

    def last_logits(self) -> np.ndarray:
        """The logits the last decode computed for its last row (what the sampler sees)."""
        if not self.has_logits:
            raise DecodeError("no logits: the last evaluation computed none")
        return self._logits_at([-1])[0]

    def loop_set(self, params) -> None:
        if lib.llama_loop_set(self.ptr, params) != 0:
            raise LoopConfigError(last_loop_error())

    def loop_seq_set(self, seq: int, loop: bool, decode: tuple[int, int]) -> None:
        if lib.llama_loop_seq_set(self.ptr, seq, loop, decode[0], decode[1]) != 0:
            raise LoopConfigError(last_loop_error())

    def loop_seq_reset(self, seq: int) -> None:
        if lib.llama_loop_seq_reset(self.ptr, seq) != 0:
            raise LoopConfigError(last_loop_error())

    def loop_seq_verify(self, seq: int, verify: bool) -> None:
        if lib.llama_loop_seq_verify(self.ptr, seq, verify) != 0:
            raise LoopConfigError(last_loop_error())

    def loop_get(self):
        p = ffi.new("struct llama_loop_params *")
        lib.llama_loop_get(self.ptr, p)
        return p[0]

    def sample(self, sampler: "SamplerHandle") -> int:
        # llama_sampler_sample aborts the process when the last decode produced no logits
        if not self.has_logits:
            raise DecodeError("nothing to sample from: the last evaluation computed no logits")
        out = ffi.new("llama_token *")
        if lib.llama_loop_sampler_sample(sampler.ptr, self.ptr, -1, out) != 0:
            raise DecodeError(f"{last_loop_error()} (a grammar that no allowed token can continue, "
                              "e.g. after logit_bias banned its tokens?)")
        return out[0]


def _decode_failure(rc: int) -> DecodeError:
    if rc == 2:
        return CancelledError("the evaluation was cancelled (Context.cancel())")
    return DecodeError(_decode_error(rc))


def _decode_error(rc: int) -> str:
    reasons = {
        1: "no KV cache slot for the batch (the context is full: use a larger n_ctx)",
        2: "decoding was aborted",
        -1: "invalid input batch (token id out of range or bad positions)",
    }
    detail = log.recent_errors()
    return f"llama_decode returned {rc}: {reasons.get(rc, 'compute failed')}" + (f" [{detail}]" if detail else "")


class SamplerHandle(_Owner):
    """llama.cpp's sampler chain for a Sampling (see sampling.py for the order). `history` is
    the tail of the prompt the penalties see; the grammar only sees generated tokens."""

    what = "sampler"

    def __init__(self, model: ModelHandle, s, seed: int, history: Sequence[int] = (),
                 grammar: Optional[str] = None) -> None:
        n_vocab = model.n_vocab()
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self._ptr = chain  # freed with everything added so far if a step below fails
        add = lambda smpl: lib.llama_sampler_chain_add(chain, smpl)
        seed &= 0xFFFFFFFF
        for tok in s.logit_bias:
            if not 0 <= tok < n_vocab:
                raise ValueError(f"logit_bias token {tok} is outside the vocabulary [0, {n_vocab})")
        bias = {**s.logit_bias, **dict.fromkeys(model.eog_tokens() if s.ignore_eos else (), float("-inf"))}
        if bias:
            biases = ffi.new("llama_logit_bias[]", len(bias))
            for i, (tok, b) in enumerate(bias.items()):
                biases[i].token, biases[i].bias = tok, b
            add(lib.llama_sampler_init_logit_bias(n_vocab, len(bias), biases))
        if s.repeat_penalty != 1.0 or s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
            last_n = s.penalty_last_n if s.penalty_last_n >= 0 else 1 << 30
            pen = lib.llama_sampler_init_penalties(n_vocab, min(last_n, 1 << 30), s.repeat_penalty,
                                                   s.frequency_penalty, s.presence_penalty)
            for tok in list(history)[-last_n:] if last_n else []:
                lib.llama_sampler_accept(pen, tok)
            add(pen)
        if grammar is not None:
            log.clear()
            g = lib.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
            if g == ffi.NULL:
                raise GrammarError(f"the grammar does not parse: {log.recent_errors() or 'llama.cpp refused it'}")
            add(g)
        if s.greedy:
            add(lib.llama_sampler_init_greedy())
        elif s.mirostat:
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_mirostat(n_vocab, seed, s.mirostat_tau, s.mirostat_eta, 100) if s.mirostat == 1
                else lib.llama_sampler_init_mirostat_v2(seed, s.mirostat_tau, s.mirostat_eta))
        else:
            if s.top_k > 0:
                add(lib.llama_sampler_init_top_k(s.top_k))
            if s.typical_p < 1.0:
                add(lib.llama_sampler_init_typical(s.typical_p, 1))
            if s.top_p < 1.0:
                add(lib.llama_sampler_init_top_p(s.top_p, 1))
            if s.min_p > 0.0:
                add(lib.llama_sampler_init_min_p(s.min_p, 1))
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_dist(seed))

    def _free(self, ptr) -> None:
        lib.llama_sampler_free(ptr)

    def accept(self, token: int) -> None:
        lib.llama_sampler_accept(self.ptr, token)
