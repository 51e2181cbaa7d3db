"""Tiny random-weight GGUFs of the architectures that loop without a numpy model of their own:
their looped graph is checked against llama.cpp itself (tests/test_arch_oracle.py). Each writer
lists only what the architecture's loader requires; shapes follow tinymodels.TinySpec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinymodels
from tinymodels import TinySpec


SWIGLU = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")


class _Weights:
    """The llama-layout tiny weights, edited per architecture: drop, fuse and add tensors."""

    def __init__(self, spec: TinySpec) -> None:
        self.spec = spec
        self.t = tinymodels.tensors(TinySpec("llama", **{k: getattr(spec, k) for k in (
            "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "seed")}))
        self.rng = np.random.default_rng(spec.seed + 1)

    def mat(self, out_dim, in_dim, gain=1.0):
        return (self.rng.standard_normal((out_dim, in_dim)) * gain / np.sqrt(in_dim)).astype(np.float32)

    def norm(self, n):
        return (1.0 + 0.2 * self.rng.standard_normal(n)).astype(np.float32)

    def bias(self, n):
        return (0.3 * self.rng.standard_normal(n)).astype(np.float32)

    def drop(self, p, *names):
        for n in names:
            del self.t[p + n]

    def biases(self, p, **sizes):  # biases(p, attn_norm=E) adds blk.N.attn_norm.bias
        for n, size in sizes.items():
            self.t[p + n + ".bias"] = self.bias(size)

    def norms(self, p, **sizes):
        for n, size in sizes.items():
            self.t[p + n + ".weight"] = self.norm(size)

    def fuse_qkv(self, p, bias=False):
        qkv = [self.t.pop(p + f"attn_{x}.weight") for x in "qkv"]
        self.t[p + "attn_qkv.weight"] = np.concatenate(qkv)
        if bias:
            self.t[p + "attn_qkv.bias"] = self.bias(sum(len(m) for m in qkv))

    def fuse_gate_up(self, p):
        self.t[p + "ffn_up.weight"] = np.concatenate([self.t.pop(p + "ffn_gate.weight"), self.t[p + "ffn_up.weight"]])

    def experts(self, p, shared=False, biased=False):
        """Routed experts (and a shared one) in place of the dense SwiGLU FFN."""
        s = self.spec
        E, F, X = s.n_embd, s.n_ff, s.n_expert
        self.drop(p, *SWIGLU)
        self.t[p + "ffn_gate_inp.weight"] = self.mat(X, E, 3.0)
        if biased:
            self.t[p + "ffn_gate_inp.bias"] = self.bias(X)
        for n, (o, i) in (("gate", (F, E)), ("up", (F, E)), ("down", (E, F))):
            self.t[p + f"ffn_{n}_exps.weight"] = np.stack([self.mat(o, i) for _ in range(X)])
            if biased:
                self.t[p + f"ffn_{n}_exps.bias"] = np.stack([self.bias(o) for _ in range(X)])
            if shared:
                self.t[p + f"ffn_{n}_shexp.weight"] = self.mat(o, i)


def tensors(arch: str, spec: TinySpec) -> dict[str, np.ndarray]:
    w = _Weights(spec)
    E, H, KV, D, F = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_ff
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        if arch == "phi3":  # fused QKV and fused gate+up
            w.fuse_qkv(p)
            w.fuse_gate_up(p)
        elif arch == "olmo2":  # norms after attention and FFN only, Q/K norms over whole rows
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
            w.norms(p, attn_q_norm=H * D, attn_k_norm=KV * D, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "gemma2":
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "qwen2moe":  # Q/K/V biases; routed experts plus a sigmoid-gated shared expert
            w.biases(p, attn_q=H * D, attn_k=KV * D, attn_v=KV * D)
            w.experts(p, shared=True)
            w.t[p + "ffn_gate_inp_shexp.weight"] = w.mat(1, E, 2.0)[0]
        elif arch == "gpt-oss":  # attention sinks, biased routed experts, no dense FFN
            w.experts(p, biased=True)
            w.drop(p, "ffn_norm.weight")
            w.norms(p, post_attention_norm=E)
            w.biases(p, attn_output=E)
            w.t[p + "attn_sinks.weight"] = w.bias(H)
        elif arch in ("starcoder2", "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron"):
            w.drop(p, "ffn_gate.weight")  # LayerNorm with biases, an MLP without a gate
            if arch in ("gpt2", "starcoder", "bloom"):
                w.fuse_qkv(p, bias=True)
            if arch == "phi2":  # attention and MLP in parallel off one norm
                w.drop(p, "ffn_norm.weight")
            else:
                w.biases(p, ffn_norm=E)
            w.biases(p, attn_norm=E, attn_output=E, ffn_up=F, ffn_down=E)
        elif arch == "internlm2":
            w.fuse_qkv(p)
        elif arch == "seed_oss":  # the norm before the FFN is called post_attention_norm
            w.t[p + "post_attention_norm.weight"] = w.t.pop(p + "ffn_norm.weight")
        elif arch == "arcee":  # ReLU-squared MLP without a gate
            w.drop(p, "ffn_gate.weight")
        elif arch == "olmoe":  # row-wide Q/K norms, routed experts only
            w.norms(p, attn_q_norm=H * D, attn_k_norm=KV * D)
            w.experts(p)
        elif arch in ("orion", "stablelm"):  # LayerNorm with biases
            w.biases(p, attn_norm=E, ffn_norm=E)
        elif arch in ("cohere2", "command-r"):  # attention and FFN in parallel off one LayerNorm
            w.drop(p, "ffn_norm.weight")
        elif arch == "glm4":  # post-norms, fused gate+up
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
            w.fuse_gate_up(p)
        elif arch == "qwen":  # fused QKV with bias, an MLP of n_ff / 2
            w.fuse_qkv(p, bias=True)
            w.t[p + "ffn_gate.weight"], w.t[p + "ffn_up.weight"] = w.mat(F // 2, E), w.mat(F // 2, E)
            w.t[p + "ffn_down.weight"] = w.mat(E, F // 2)
        elif arch == "llama4" and (il + 1) % 2 == 0:  # every other layer MoE with a shared expert
            w.experts(p, shared=True)
        elif arch == "olmo":  # LayerNorm without parameters
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
        elif arch in ("falcon", "mpt"):  # fused QKV, an MLP without a gate
            w.fuse_qkv(p)
            w.drop(p, "ffn_gate.weight")
            if arch == "falcon":  # attention and MLP in parallel off one LayerNorm
                w.drop(p, "ffn_norm.weight")
                w.biases(p, attn_norm=E)
        elif arch == "jais":  # fused QKV, biases everywhere
            w.fuse_qkv(p, bias=True)
            w.biases(p, attn_norm=E, attn_output=E, ffn_norm=E, ffn_gate=F, ffn_up=F, ffn_down=E)
        elif arch == "bailingmoe" or (arch in ("deepseek", "dots1") and il > 0):  # deepseek, dots1: dense layer 0
            w.experts(p, shared=True)
        elif arch in ("dbrx", "grok"):  # a norm after attention, routed experts
            w.experts(p)
            w.norms(p, attn_output_norm=E)
            if arch == "dbrx":
                w.drop(p, "ffn_norm.weight")
                w.fuse_qkv(p)
            else:
                w.norms(p, post_ffw_norm=E)
        elif arch == "exaone4":  # norms after attention and FFN only
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "plamo":  # attention and MLP in parallel off one norm
            w.drop(p, "ffn_norm.weight")
        elif arch == "hunyuan-moe":
            w.experts(p, shared=True)
        elif arch == "smallthinker":
            w.experts(p)
        elif arch == "bitnet":  # sub-norms inside attention and the MLP
            w.norms(p, attn_sub_norm=E, ffn_sub_norm=F)
        elif arch == "chatglm":
            w.fuse_gate_up(p)
        if arch in ("dots1", "exaone4", "maincoder", "hunyuan-moe"):  # per-head Q/K norms
            w.norms(p, attn_q_norm=D, attn_k_norm=D)
    t = w.t
    if arch in ("gpt2", "starcoder"):
        t["position_embd.weight"] = (0.5 * w.rng.standard_normal((spec.n_ctx, E))).astype(np.float32)
    if arch == "bloom":
        t["token_embd_norm.weight"], t["token_embd_norm.bias"] = w.norm(E), w.bias(E)
    if arch == "phi2":
        t["output.bias"] = w.bias(spec.n_vocab)
    if arch in ("gemma2", "cohere2", "gemma", "command-r", "bitnet"):
        del t["output.weight"]  # tied to the embeddings
    if arch == "olmo":
        del t["output_norm.weight"]
    if arch in LAYERNORM and arch not in ("cohere2", "command-r", "olmo", "mpt", "dbrx"):
        t["output_norm.bias"] = w.bias(E)
    return t


# OpenELM: heads and FFN width change from layer to layer
OPENELM = {"heads": [4, 4, 2, 4, 2, 4], "heads_kv": [2, 2, 1, 2, 1, 1], "ff": [96, 64, 96, 64, 96, 64]}


def openelm_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    w = _Weights(spec)
    E, D = spec.n_embd, spec.head_dim
    t = {k: v for k, v in w.t.items() if not k.startswith("blk.")}
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        H, KV, F = OPENELM["heads"][il], OPENELM["heads_kv"][il], OPENELM["ff"][il]
        t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"] = w.norm(E), w.norm(E)
        t[p + "attn_qkv.weight"] = w.mat((H + 2 * KV) * D, E, 2.0)
        t[p + "attn_q_norm.weight"], t[p + "attn_k_norm.weight"] = w.norm(D), w.norm(D)
        t[p + "attn_output.weight"] = w.mat(E, H * D)
        t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"], t[p + "ffn_down.weight"] = w.mat(F, E), w.mat(F, E), w.mat(E, F)
    del t["output.weight"]  # tied
    return t


def deepseek2_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """MLA attention (low-rank Q and KV, a K-only cache of the compressed KV plus RoPE part),
    one leading dense layer, then MoE layers with a shared expert."""
    rng = np.random.default_rng(spec.seed + 2)
    E, H, F, X, V = spec.n_embd, spec.n_head, spec.n_ff, spec.n_expert, spec.n_vocab
    QL, KVL, ROPE, NOPE, VH = DS2["q_lora"], DS2["kv_lora"], DS2["rope"], DS2["nope"], DS2["v_head"]

    def mat(*shape, gain=1.0):
        return (rng.standard_normal(shape) * gain / np.sqrt(shape[-1])).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": rng.standard_normal((V, E)).astype(np.float32),
         "output_norm.weight": norm(E), "output.weight": mat(V, E)}
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm(E)
        t[p + "attn_q_a_norm.weight"] = norm(QL)
        t[p + "attn_kv_a_norm.weight"] = norm(KVL)
        t[p + "attn_q_a.weight"] = mat(QL, E)
        t[p + "attn_q_b.weight"] = mat(H * (NOPE + ROPE), QL, gain=2.0)
        t[p + "attn_kv_a_mqa.weight"] = mat(KVL + ROPE, E, gain=2.0)
        t[p + "attn_k_b.weight"] = mat(H, KVL, NOPE)
        t[p + "attn_v_b.weight"] = mat(H, VH, KVL)
        t[p + "attn_output.weight"] = mat(E, H * VH)
        t[p + "ffn_norm.weight"] = norm(E)
        if il < DS2["dense_lead"]:
            t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"], t[p + "ffn_down.weight"] = mat(F, E), mat(F, E), mat(E, F)
        else:
            t[p + "ffn_gate_inp.weight"] = mat(X, E, gain=3.0)
            t[p + "ffn_gate_exps.weight"] = mat(X, F, E)
            t[p + "ffn_up_exps.weight"] = mat(X, F, E)
            t[p + "ffn_down_exps.weight"] = mat(X, E, F)
            t[p + "ffn_gate_shexp.weight"], t[p + "ffn_up_shexp.weight"] = mat(F, E), mat(F, E)
            t[p + "ffn_down_shexp.weight"] = mat(E, F)
    return t


DS2 = {"q_lora": 32, "kv_lora": 32, "rope": 8, "nope": 16, "v_head": 16, "dense_lead": 1}


ARCHS = ("phi3", "olmo2", "qwen2moe", "smollm3", "gemma2", "gpt-oss", "mistral3", "starcoder2", "granite",
         "exaone", "xverse", "internlm2", "seed_oss", "arcee", "olmoe", "orion", "cohere2", "glm4",
         "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron", "stablelm", "qwen", "llama4",
         "deepseek2", "gemma", "command-r", "olmo", "falcon", "mpt", "jais", "refact", "deepseek", "bailingmoe",
         "dots1", "dbrx", "grok", "openelm", "exaone4", "maincoder", "plamo", "hunyuan-moe", "bitnet",
         "smallthinker", "chatglm")
MOE = ("qwen2moe", "gpt-oss", "olmoe", "llama4", "deepseek2", "deepseek", "bailingmoe", "dots1", "dbrx", "grok",
       "hunyuan-moe", "smallthinker")
LAYERNORM = ("starcoder2", "orion", "cohere2", "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron",
             "stablelm", "command-r", "olmo", "falcon", "mpt", "jais", "dbrx")
# Shapes some loaders insist on: olmoe's K norm spans n_embd, so K/V heads = Q heads.
SPECS = {a: TinySpec("llama", n_head_kv=4) for a in ("olmoe", "qwen", "dots1")}


def write(arch: str, path: Path, spec: TinySpec | None = None) -> Path:
    import gguf

    spec = spec or SPECS.get(arch, TinySpec("llama"))
    mla = {}
    if arch == "deepseek2":  # MLA: one K/V head: the compressed KV plus the RoPE part (K), the compressed KV (V)
        spec = TinySpec("llama", n_head_kv=1)
        mla = dict(key_length=DS2["kv_lora"] + DS2["rope"], value_length=DS2["kv_lora"], rope_dims=DS2["rope"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")  # not the architecture: llama.cpp keys vocabulary quirks on "phi3" in the name
    if arch == "openelm":
        mla = dict(heads=OPENELM["heads"], heads_kv=OPENELM["heads_kv"])
    tinymodels.add_shape(w, spec, **mla)
    w.add_feed_forward_length(OPENELM["ff"] if arch == "openelm" else spec.n_ff)
    if arch in MOE:
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(1 if arch == "llama4" else spec.n_expert_used)
        w.add_expert_feed_forward_length(spec.n_ff)
    if arch in ("deepseek", "bailingmoe", "dots1", "deepseek2"):
        w.add_uint32(f"{arch}.expert_shared_count", 1)
        w.add_float32(f"{arch}.expert_weights_scale", 1.0)
    if arch in ("deepseek", "dots1", "deepseek2"):
        w.add_uint32(f"{arch}.leading_dense_block_count", 1)
    if arch in LAYERNORM:
        w.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-5)
    if arch in ("gemma2", "gpt-oss", "cohere2", "exaone4"):
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)  # unlike the global layers' base
    if arch in ("qwen2moe", "hunyuan-moe"):
        w.add_uint32(f"{arch}.expert_shared_feed_forward_length", spec.n_ff)
    if arch == "gemma2":
        w.add_float32(f"{arch}.attn_logit_softcapping", 50.0)
        w.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    if arch == "dbrx":
        w.add_float32(f"{arch}.attention.clamp_kqv", 8.0)
    if arch in ("dots1", "smallthinker"):
        w.add_uint32(f"{arch}.expert_gating_func", 2 if arch == "dots1" else 1)  # sigmoid, softmax
    if arch == "deepseek2":
        w.add_uint32(f"{arch}.attention.q_lora_rank", DS2["q_lora"])
        w.add_uint32(f"{arch}.attention.kv_lora_rank", DS2["kv_lora"])
        w.add_uint32(f"{arch}.attention.key_length_mla", DS2["nope"] + DS2["rope"])
        w.add_uint32(f"{arch}.attention.value_length_mla", DS2["v_head"])
    if arch == "llama4":
        w.add_uint32(f"{arch}.interleave_moe_layer_step", 2)
    if arch == "cohere2":
        w.add_float32(f"{arch}.logit_scale", 0.5)
    if arch == "granite":  # muP-style scales
        w.add_float32(f"{arch}.logit_scale", 2.0)
        w.add_float32(f"{arch}.residual_scale", 0.5)
        w.add_float32(f"{arch}.embedding_scale", 3.0)
        w.add_float32(f"{arch}.attention.scale", 0.3)
    tinymodels._add_vocab(w, spec.n_vocab)
    writers = {"deepseek2": deepseek2_tensors, "openelm": openelm_tensors}
    return tinymodels.finish(w, writers.get(arch, lambda sp: tensors(arch, sp))(spec), path)
