"""A tiny llama-like model as Hugging Face safetensors and as GGUF files the way llama.cpp's
converter writes them (GGUF names, Q/K rows permuted, ggml types), for the README's
"Quantized models" section and tests/test_gguf_mapping.py.

    python examples/make_gguf_example.py   # writes examples/llama-tiny.safetensors,
                                           # examples/llama-tiny-Q4_K.gguf (< 200 KB each)

Needs numpy, safetensors and llama.cpp's `gguf` package (pip install gguf). gguf-py quantizes
Q8_0 but not the K-quants, so Q4_K blocks are packed here by `quantize_q4_k` (a plain min/max
fit per 32 values, not llama.cpp's search: its error is a little larger than llama.cpp's Q4_K);
every value diffai reads back is checked against gguf-py's own `dequantize` in the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np

HERE = Path(__file__).resolve().parent


def llama_state_dict(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                     head_dim: int = 0, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face LlamaForCausalLM names (``head_dim`` defaults
    to hidden / heads, as in LlamaConfig)."""
    rng = np.random.default_rng(seed)
    head_dim = head_dim or hidden // heads

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    sd = {"model.embed_tokens.weight": w(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        sd[p + "self_attn.q_proj.weight"] = w(heads * head_dim, hidden)
        sd[p + "self_attn.k_proj.weight"] = w(kv_heads * head_dim, hidden)
        sd[p + "self_attn.v_proj.weight"] = w(kv_heads * head_dim, hidden)
        sd[p + "self_attn.o_proj.weight"] = w(hidden, heads * head_dim)
        sd[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        sd[p + "mlp.gate_proj.weight"] = w(intermediate, hidden)
        sd[p + "mlp.up_proj.weight"] = w(intermediate, hidden)
        sd[p + "mlp.down_proj.weight"] = w(hidden, intermediate)
    sd["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    sd["lm_head.weight"] = w(vocab, hidden)
    return sd


# Hugging Face name -> GGUF name, as gguf-py's tensor_mapping.py maps LlamaForCausalLM.
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py, LlamaModel.permute (applied to q_proj with
    (n_head, n_head) and k_proj with (n_head, n_head_kv)), verbatim but for numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """float32 rows (length a multiple of 256) as Q4_K blocks (ggml block_q4_K: f16 d, f16 dmin,
    12 bytes of 6-bit sub-block scales and mins, 128 bytes of 4-bit codes), decoded by
    d*sc*q - dmin*m. Each 32-value sub-block takes its own min/max range."""
    rows = x.shape[0]
    sub = x.reshape(-1, 8, 32).astype(np.float64)
    lo = np.minimum(sub.min(axis=2), 0.0)
    scale = (sub.max(axis=2) - lo) / 15
    d = np.maximum(scale.max(axis=1), 1e-30) / 63
    dmin = np.maximum((-lo).max(axis=1), 1e-30) / 63
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    sc = np.clip(np.rint(scale / d16.astype(np.float64)[:, None]), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(-lo / dmin16.astype(np.float64)[:, None]), 0, 63).astype(np.uint8)
    step = d16.astype(np.float64)[:, None] * sc
    offset = dmin16.astype(np.float64)[:, None] * m
    q = np.clip(np.rint((sub + offset[:, :, None]) / np.where(step > 0, step, 1)[:, :, None]), 0, 15).astype(np.uint8)
    scales = np.zeros((len(sc), 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    q = q.reshape(-1, 4, 2, 32)  # 64-value chunks: low nibbles the first 32, high nibbles the next
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d16.view(np.uint8).reshape(-1, 2), dmin16.view(np.uint8).reshape(-1, 2), scales, qs], axis=1)
    return blocks.reshape(rows, -1)


def write_gguf(path: Path, sd: Dict[str, np.ndarray], heads: int, kv_heads: int,
               qtype_of: Callable[[str, np.ndarray], "object"], arch: str = "llama",
               extra: Dict[str, np.ndarray] | None = None) -> Dict[str, object]:
    """``sd`` as llama.cpp's converter writes it (GGUF names, q/k permuted), each tensor in
    ``qtype_of(gguf name, array)``, then ``extra`` tensors (GGUF names, F32); returns GGUF name
    -> ggml type."""
    import gguf

    Q = gguf.GGMLQuantizationType
    layers = sum(1 for n in sd if n.endswith("input_layernorm.weight"))
    hidden = sd["model.embed_tokens.weight"].shape[1]
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(sd["model.layers.0.mlp.up_proj.weight"].shape[0])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(sd["model.layers.0.self_attn.q_proj.weight"].shape[0] // heads)
    types = {}
    for hf, data in sd.items():
        if hf.endswith("q_proj.weight"):
            data = permute(data, heads, heads)
        elif hf.endswith("k_proj.weight"):
            data = permute(data, heads, kv_heads)
        name = gguf_name(hf)
        qtype = Q.F32 if data.ndim == 1 else qtype_of(name, data)
        raw = {Q.F32: lambda a: a, Q.F16: lambda a: a.astype(np.float16), Q.Q4_K: quantize_q4_k}.get(
            qtype, lambda a: gguf.quants.quantize(a, qtype))(np.ascontiguousarray(data))
        w.add_tensor(name, raw, raw_dtype=qtype)
        types[name] = qtype
    for name, data in (extra or {}).items():
        w.add_tensor(name, data.astype(np.float32), raw_dtype=Q.F32)
        types[name] = Q.F32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def q4_k_mix(name: str, data: np.ndarray):
    """Q4_K where rows hold whole 256-value blocks, Q8_0 for attn_v / ffn_down (which
    llama.cpp's Q4_K_M keeps at higher precision too, there Q6_K) and rows of 32-value blocks,
    F16 for rows no block fits."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if data.shape[-1] % 256 == 0 and not name.endswith(("attn_v.weight", "ffn_down.weight")):
        return Q.Q4_K
    return Q.Q8_0 if data.shape[-1] % 32 == 0 else Q.F16


def main() -> None:
    from safetensors.numpy import save_file

    heads, kv_heads = 4, 2
    # Rows of 256 values (hidden) so that Q4_K blocks fit, everything else as small as a llama
    # layer allows, to keep each file under 200 KB.
    sd = llama_state_dict(hidden=256, intermediate=32, layers=2, heads=heads, kv_heads=kv_heads, vocab=16,
                          head_dim=4, seed=0)
    save_file({k: v.astype(np.float16) for k, v in sd.items()}, str(HERE / "llama-tiny.safetensors"))
    half = {k: v.astype(np.float16).astype(np.float32) for k, v in sd.items()}  # what the converter reads
    write_gguf(HERE / "llama-tiny-Q4_K.gguf", half, heads, kv_heads, q4_k_mix)
    for f in ("llama-tiny.safetensors", "llama-tiny-Q4_K.gguf"):
        print(f, (HERE / f).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
