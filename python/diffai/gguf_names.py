"""GGUF <-> Hugging Face tensor names for the llama family, so that ``diffai model.safetensors
model-Q4_K_M.gguf`` pairs each logical weight. The tables follow llama.cpp's gguf-py
(``gguf/tensor_mapping.py``, ``gguf/constants.py`` MODEL_TENSORS) and ``convert_hf_to_gguf.py``;
the architecture comes from the GGUF's ``general.architecture``.

llama.cpp's converter permutes the rows of attn_q / attn_k for the llama architecture
(``LlamaModel.permute``: rows read as [heads, 2, head_dim/2] are swapped to [heads, head_dim/2, 2]);
those tensors are compared with the permutation undone by the core, which reads the GGUF rows back
in Hugging Face order."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional


# GGUF name (after ``blk.N.``) -> Hugging Face name (after ``model.layers.N.``).
_LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BIASES = {"attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
           "attn_v.bias": "self_attn.v_proj.bias"}
_QK_NORMS = {"attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight"}
_PHI3_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight", "attn_qkv.weight": "self_attn.qkv_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_up.weight": "mlp.gate_up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}

# general.architecture -> per-block table. Hugging Face Mistral models convert to "llama".
BLOCK_NAMES: Dict[str, Dict[str, str]] = {
    "llama": {**_LLAMA_BLOCK, **_BIASES},
    "qwen2": {**_LLAMA_BLOCK, **_BIASES},
    "qwen3": {**_LLAMA_BLOCK, **_QK_NORMS},
    "gemma": _LLAMA_BLOCK,
    "phi3": _PHI3_BLOCK,
}
# Architectures whose converter (LlamaModel.modify_tensors) permutes q/k rows.
PERMUTED = {"llama"}
# Differences of values the converter makes on purpose, told beside the diff (GemmaModel stores
# RMSNorm weights plus one).
VALUE_NOTES = {"gemma": "gemma's converter stores norm weights + 1 in GGUF: its *norm.weight tensors differ by 1"}

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def hf_name(arch: str, name: str) -> Optional[str]:
    """The Hugging Face name of GGUF tensor ``name`` of architecture ``arch``, or None."""
    if name in _TOP:
        return _TOP[name]
    m = _BLOCK.match(name)
    if m and m.group(2) in BLOCK_NAMES[arch]:
        return f"model.layers.{m.group(1)}.{BLOCK_NAMES[arch][m.group(2)]}"
    return None


@dataclass
class Permuted:
    """A GGUF tensor whose rows llama.cpp permuted: ``heads`` groups of rows."""

    heads: int


@dataclass
class GgufAlignment:
    """GGUF names of one side mapped to Hugging Face names (``paired`` tensors matched)."""

    arch: str
    side: str
    paired: int
    unmapped: List[str] = field(default_factory=list)
    file: str = ""

    def text_line(self) -> str:
        where = f" in {self.file.removesuffix('::')}" if self.file else ""
        return f"aligned{where}: GGUF {self.arch} names mapped to Hugging Face ({self.paired} tensors)"

    def to_json(self) -> Dict[str, object]:
        return {"GgufAlignment": {"architecture": self.arch, "gguf_side": self.side, "paired": self.paired,
                                  "unmapped": self.unmapped, **({"file": self.file.removesuffix("::")}
                                                                if self.file else {})}}


def _head_count(meta: Dict[str, str], key: str) -> Optional[int]:
    try:
        return int(meta[key])
    except (KeyError, ValueError):  # absent, or one count per layer (an array)
        return None


@dataclass
class Mapping:
    """How a GGUF side's names map: its own name -> Hugging Face name (unmapped names keep their
    own), the permuted tensors (own name -> Permuted) and what the user should be told."""

    alignment: GgufAlignment
    keys: Dict[str, str]
    permuted: Dict[str, Permuted]
    notes: List[str]


def gguf_mapping(gguf_src, other_src, side: str, file: str = "") -> Optional[Mapping]:
    """The mapping of ``gguf_src``'s names (a GGUF beside a file with Hugging Face names), or
    None when its architecture has no table (the caller notes that)."""
    meta = gguf_src.metadata
    arch = meta.get("general.architecture", "")
    if arch not in BLOCK_NAMES:
        return None
    keys: Dict[str, str] = {}
    unmapped: List[str] = []
    other = other_src.tensor_infos()
    infos = gguf_src.tensor_infos()
    taken = set()
    for name in infos:
        mapped = hf_name(arch, name)
        if mapped is None or mapped in taken:
            unmapped.append(name)
            mapped = name
        keys[name] = mapped
        taken.add(mapped)
    notes = [f"GGUF tensors without a Hugging Face name in the {arch} table (compared by their own name): "
             + ", ".join(unmapped)] if unmapped else []
    if arch in VALUE_NOTES:
        notes.append(VALUE_NOTES[arch])
    permuted: Dict[str, Permuted] = {}
    if arch in PERMUTED:
        heads = _head_count(meta, f"{arch}.attention.head_count")
        kv_heads = _head_count(meta, f"{arch}.attention.head_count_kv") or heads
        for name in keys:
            if ".attn_q." not in name and ".attn_k." not in name:
                continue
            count = heads if ".attn_q." in name else kv_heads
            rows = infos[name][1][0] if infos[name][1] else 0
            if count and rows % (2 * count) == 0:
                permuted[name] = Permuted(count)
            else:
                notes.append(f"{name}: the converter's q/k row permutation cannot be undone without "
                             f"{arch}.attention.head_count(_kv) dividing its {rows} rows: compared as stored")
    paired = sum(1 for n, k in keys.items() if k in other)
    return Mapping(GgufAlignment(arch, side, paired, unmapped, file), keys, permuted, notes)


def applies(a, b) -> bool:
    """One side GGUF, the other not: the only case names are mapped."""
    return (a.format == "gguf") != (b.format == "gguf")
