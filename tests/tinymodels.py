"""Tiny random-weight GGUF models (f32) of every loop-capable architecture, written with `gguf`.

Weights are scaled so that each layer changes the residual stream strongly (a layer's update is
of the order of its input): a wrong integrator, cache policy or routing freeze moves the logits
far beyond the reference tolerance. Every model is deterministic in its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARCHS = ("llama", "qwen2", "qwen3", "qwen3moe", "gemma3")


@dataclass(frozen=True)
class TinySpec:
    arch: str
    n_layer: int = 6
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_ff: int = 96
    n_vocab: int = 288  # 3 control + 256 byte + 29 filler tokens
    n_ctx: int = 256
    n_expert: int = 4
    n_expert_used: int = 2
    rope_base: float = 10000.0
    rope_base_swa: float = 10000.0
    n_swa: int = 5
    swa_pattern: int = 3  # gemma3: layers with il % 3 < 2 slide, every third is global
    eps: float = 1e-6
    seed: int = 0


def _vocab(n_vocab: int):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)  # unknown, control, byte, normal
    scores = [0.0] * 259 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores, types


def _add_vocab(w, n_vocab: int, duplicate_token: bool = False) -> None:
    """The byte-fallback SentencePiece-style vocabulary every tiny model uses."""
    tokens, scores, types = _vocab(n_vocab)
    if duplicate_token:
        tokens[-1] = tokens[-2]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)


def tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """The model's weights in numpy layout (rows = output features), keyed by GGUF tensor name."""
    rng = np.random.default_rng(spec.seed)
    E, H, KV, D, F, V = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_ff, spec.n_vocab

    def mat(out_dim, in_dim, gain=1.0):
        return (rng.standard_normal((out_dim, in_dim)) * gain / np.sqrt(in_dim)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    t = {
        "token_embd.weight": rng.standard_normal((V, E)).astype(np.float32),
        "output_norm.weight": norm(E),
        "output.weight": mat(V, E),
    }
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm(E)
        t[p + "attn_q.weight"] = mat(H * D, E, 2.0)
        t[p + "attn_k.weight"] = mat(KV * D, E, 2.0)
        t[p + "attn_v.weight"] = mat(KV * D, E)
        t[p + "attn_output.weight"] = mat(E, H * D)
        t[p + "ffn_norm.weight"] = norm(E)
        if spec.arch == "qwen2":
            t[p + "attn_q.bias"] = (0.5 * rng.standard_normal(H * D)).astype(np.float32)
            t[p + "attn_k.bias"] = (0.5 * rng.standard_normal(KV * D)).astype(np.float32)
            t[p + "attn_v.bias"] = (0.5 * rng.standard_normal(KV * D)).astype(np.float32)
        if spec.arch in ("qwen3", "qwen3moe", "gemma3"):
            t[p + "attn_q_norm.weight"] = norm(D)
            t[p + "attn_k_norm.weight"] = norm(D)
        if spec.arch == "gemma3":
            t[p + "post_attention_norm.weight"] = norm(E)
            t[p + "post_ffw_norm.weight"] = norm(E)
        if spec.arch == "qwen3moe":
            X = spec.n_expert
            t[p + "ffn_gate_inp.weight"] = mat(X, E, 3.0)
            t[p + "ffn_gate_exps.weight"] = np.stack([mat(F, E) for _ in range(X)])
            t[p + "ffn_up_exps.weight"] = np.stack([mat(F, E) for _ in range(X)])
            t[p + "ffn_down_exps.weight"] = np.stack([mat(E, F) for _ in range(X)])
        else:
            t[p + "ffn_gate.weight"] = mat(F, E)
            t[p + "ffn_up.weight"] = mat(F, E)
            t[p + "ffn_down.weight"] = mat(E, F)
    return t


def add_shape(w, spec: TinySpec, key_length: int | None = None, value_length: int | None = None,
              rope_dims: int | None = None, heads=None, heads_kv=None) -> None:
    """The hyperparameters every tiny model shares: sizes, heads, RoPE, norm epsilon, F32 file
    (key, value and RoPE widths default to the head size; heads and heads_kv may be per-layer lists)."""
    import gguf

    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_head_count(spec.n_head if heads is None else heads)
    w.add_head_count_kv(spec.n_head_kv if heads_kv is None else heads_kv)
    w.add_key_length(key_length or spec.head_dim)
    w.add_value_length(value_length or spec.head_dim)
    w.add_rope_dimension_count(rope_dims or spec.head_dim)
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(spec.eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)


def write(spec: TinySpec, path: Path, loop_recipe: str | None = None, duplicate_token: bool = False,
          drop: tuple[str, ...] = (), causal: bool = True) -> Path:
    """Writes the GGUF; loop_recipe, if given, becomes the loopcpp.loop metadata key; causal=False
    makes an encoder (bidirectional attention). Broken files for the bad-input tests:
    duplicate_token repeats a token string in the vocabulary; drop leaves those tensors out."""
    import gguf

    a = spec.arch
    w = gguf.GGUFWriter(str(path), a)
    w.add_name(f"tiny-{a}")
    add_shape(w, spec)
    if a == "qwen3moe":
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(spec.n_expert_used)
        w.add_expert_feed_forward_length(spec.n_ff)
        w.add_feed_forward_length(spec.n_ff)
    else:
        w.add_feed_forward_length(spec.n_ff)
    if a == "gemma3":
        w.add_sliding_window(spec.n_swa)
        w.add_uint32(f"{a}.attention.sliding_window_pattern", spec.swa_pattern)
        w.add_float32(f"{a}.rope.freq_base_swa", spec.rope_base_swa)
    if not causal:
        w.add_bool(f"{a}.attention.causal", False)
    _add_vocab(w, spec.n_vocab, duplicate_token)
    if loop_recipe is not None:
        w.add_string("loopcpp.loop", loop_recipe)
    return finish(w, {k: v for k, v in tensors(spec).items() if k not in drop}, path)


def finish(w, weights: dict[str, np.ndarray], path: Path) -> Path:
    """Adds the tensors and writes the file."""
    for name, arr in weights.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_mamba(path: Path, n_layer: int = 2, n_embd: int = 32, n_vocab: int = 288, seed: int = 0) -> Path:
    """A tiny Mamba (recurrent, no KV cache): an architecture the loop must refuse cleanly."""
    import gguf

    rng = np.random.default_rng(seed)
    d_inner, d_state, d_conv, dt_rank = 2 * n_embd, 8, 4, 4
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_name("tiny-mamba")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_vocab(w, n_vocab)

    def t(*shape):  # numpy layout: the reverse of ggml's ne
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", t(n_vocab, n_embd))
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ssm_in.weight", t(2 * d_inner, n_embd))
        w.add_tensor(p + "ssm_conv1d.weight", t(d_inner, d_conv))
        w.add_tensor(p + "ssm_conv1d.bias", t(d_inner))
        w.add_tensor(p + "ssm_x.weight", t(dt_rank + 2 * d_state, d_inner))
        w.add_tensor(p + "ssm_dt.weight", t(d_inner, dt_rank))
        w.add_tensor(p + "ssm_dt.bias", t(d_inner))
        w.add_tensor(p + "ssm_a", -np.abs(t(d_inner, d_state)) - 0.5)
        w.add_tensor(p + "ssm_d", np.ones(d_inner, np.float32))
        w.add_tensor(p + "ssm_out.weight", t(n_embd, d_inner))
    return finish(w, {}, path)


def write_lfm2(path: Path, n_layer: int = 4, n_embd: int = 32, n_vocab: int = 288, seed: int = 0) -> Path:
    """A tiny LFM2 (hybrid: short-convolution layers with a recurrent state, and attention layers
    where heads_kv > 0): another architecture the loop must refuse cleanly."""
    import gguf

    rng = np.random.default_rng(seed)
    n_head, head_dim, n_ff, l_cache = 4, n_embd // 4, 64, 3
    heads_kv = [0 if il % 2 == 0 else 2 for il in range(n_layer)]  # even layers convolve
    w = gguf.GGUFWriter(str(path), "lfm2")
    w.add_name("tiny-lfm2")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(heads_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_uint32("lfm2.shortconv.l_cache", l_cache)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_vocab(w, n_vocab)

    def t(*shape):  # numpy layout: the reverse of ggml's ne
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    weights = {"token_embd.weight": t(n_vocab, n_embd), "token_embd_norm.weight": np.ones(n_embd, np.float32)}
    for il in range(n_layer):
        p = f"blk.{il}."
        weights[p + "attn_norm.weight"] = weights[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        weights[p + "ffn_gate.weight"], weights[p + "ffn_up.weight"] = t(n_ff, n_embd), t(n_ff, n_embd)
        weights[p + "ffn_down.weight"] = t(n_embd, n_ff)
        if heads_kv[il]:
            kv = heads_kv[il] * head_dim
            weights[p + "attn_q_norm.weight"] = weights[p + "attn_k_norm.weight"] = np.ones(head_dim, np.float32)
            weights[p + "attn_q.weight"], weights[p + "attn_k.weight"] = t(n_embd, n_embd), t(kv, n_embd)
            weights[p + "attn_v.weight"], weights[p + "attn_output.weight"] = t(kv, n_embd), t(n_embd, n_embd)
        else:
            weights[p + "shortconv.conv.weight"] = t(n_embd, l_cache)
            weights[p + "shortconv.in_proj.weight"] = t(3 * n_embd, n_embd)
            weights[p + "shortconv.out_proj.weight"] = t(n_embd, n_embd)
    return finish(w, weights, path)


def swa_layers(spec: TinySpec) -> list[bool]:
    """Which layers use sliding-window attention (gemma3's pattern; none elsewhere)."""
    if spec.arch != "gemma3":
        return [False] * spec.n_layer
    return [il % spec.swa_pattern < spec.swa_pattern - 1 for il in range(spec.n_layer)]


def write_hrm_text(path: Path, n_embd: int = 32, n_vocab: int = 288, seed: int = 0) -> Path:
    """A tiny HRM-Text: a low and a high stack of one layer each, run in hierarchical cycles over
    aliased cache slots (here 2 high cycles of 1 low pass + 1 high pass: 4 slots). Already a
    looped model, which the loop must refuse cleanly."""
    import gguf

    rng = np.random.default_rng(seed)
    n_head, head_dim, n_ff = 4, n_embd // 4, 64
    w = gguf.GGUFWriter(str(path), "hrm_text")
    w.add_name("tiny-hrm")
    add_shape(w, TinySpec("llama", n_layer=4, n_embd=n_embd, n_head=n_head, n_head_kv=n_head, head_dim=head_dim,
                          n_ff=n_ff, n_vocab=n_vocab))
    w.add_feed_forward_length(n_ff)
    for key, value in (("layers_per_stack", 1), ("h_cycles", 2), ("l_cycles", 1)):
        w.add_uint32(f"hrm_text.hrm.{key}", value)
    _add_vocab(w, n_vocab)

    def t(*shape):  # numpy layout: the reverse of ggml's ne
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    weights = {"token_embd.weight": t(n_vocab, n_embd), "hrm.z_l_init": t(n_embd)}
    for il in range(2):  # block 0: the low stack, block 1: the high one; parameter-free norms
        p = f"blk.{il}."
        for n in ("attn_q", "attn_k", "attn_v", "attn_gate"):
            weights[p + n + ".weight"] = t(n_embd, n_embd)
        weights[p + "attn_output.weight"] = t(n_embd, n_embd)
        weights[p + "ffn_gate.weight"], weights[p + "ffn_up.weight"] = t(n_ff, n_embd), t(n_ff, n_embd)
        weights[p + "ffn_down.weight"] = t(n_embd, n_ff)
    return finish(w, weights, path)
