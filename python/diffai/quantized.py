"""Quantized checkpoints as they ship in safetensors / ``.pt``: each packed weight and its
auxiliary tensors (scales, zeros, ``g_idx``, ``absmax`` ...) read as ONE logical weight under its
logical name (``...q_proj.weight``), valued by dequantization, stored as ``storage`` (``gptq-int4
g128``) in ``nbytes`` (all its parts).

Conventions (recognised from tensor names and dtypes, and ``quantization_config`` of a
``config.json`` beside the file or in the safetensors ``__metadata__``), with the reference each
decoder follows:

- GPTQ (AutoGPTQ / GPTQModel ``pack``, 2/3/4/8-bit): ``qweight`` int32 [K*b/32, N] packed along K,
  low bits first, as a bit stream (3-bit: 32 codes in 3 words, two of them split across words);
  ``qzeros`` int32 [G, N*b/32] packed along N the same way, stored minus 1 (``checkpoint_format``
  ``gptq``; ``gptq_v2`` stores them as they are); ``scales`` [G, N]; ``g_idx`` [K] the group of
  each input column (``desc_act`` permutes it). ``W[n, k] = scales[g, n] * (q[k, n] - zero[g, n])``
  with ``g = g_idx[k]``. The width is the config's ``bits``, else the one the zeros' row length gives.
- AWQ (AutoAWQ GEMM ``pack``): ``qweight`` int32 [K, N/8] and ``qzeros`` [G, N/8] packed along N in
  the order ``[0, 2, 4, 6, 1, 3, 5, 7]``; ``W[n, k] = scales[k // g, n] * (q[k, n] - zero[k // g, n])``.
- bitsandbytes 4-bit (``bitsandbytes.functional.dequantize_4bit``): ``weight`` uint8, two codes a
  byte, high nibble first; ``absmax`` per ``blocksize`` elements (double quantization: uint8 codes
  of ``nested_quant_map`` times ``nested_absmax`` per ``nested_blocksize`` plus ``nested_offset``);
  the value is ``quant_map[code] * absmax``; shape and block sizes from ``quant_state.*`` JSON.
- bitsandbytes int8 (``int8_vectorwise_dequant``): ``weight`` int8 and ``SCB`` per row:
  ``W = q * SCB * 7.874015718698502e-3`` (its reciprocal of 127), in float32 as bitsandbytes does.
- FP8 with scales: ``weight`` float8 and ``weight_scale_inv`` per 128x128 block (DeepSeek-V3
  ``weight_dequant``; block from ``weight_block_size``) or compressed-tensors ``weight_scale``
  (per tensor, channel or group): ``W = w * scale`` of the element's block, in float32 as both do.
- compressed-tensors ``pack-quantized`` (``pack_to_int32``, 1-8 bits): ``weight_packed`` int32
  [N, ceil(K*b/32)], each row a dense bit stream of the codes plus ``2**(b-1)``; ``weight_scale``
  [N, G], [N, 1] or one value. Symmetric: ``W = (code - 2**(b-1)) * scale``. Asymmetric (the
  compressor's ``symmetric=False``): ``weight_zero_point`` int32 [ceil(N*b/32), G] packed along N
  the same way (per tensor: one int8, not packed), ``W = (code - zero) * scale`` (compressed-tensors
  ``_dequantize``, in the scale's dtype: float32 is bit for bit). The width ``b`` is the one that
  gives the packed row length (and that the config's ``config_groups`` name).
- MXFP4 (gpt-oss, transformers ``convert_moe_packed_tensors``): ``*_blocks`` / ``*.blocks`` uint8
  [..., G, 16] with two E2M1 codes a byte (low nibble first) and ``*_scales`` uint8 [..., G] E8M0:
  ``W = LUT[code] * 2**(scale - 127)``; the logical shape is [..., G * 32] (the checkpoint's own
  layout, not transformers' transposed one).

Tensors of a convention that does not apply (another bit width, parts whose shapes disagree) stay
visible as their raw tensors. This module decides which tensors form a logical weight and with
which parameters (a ``spec``); the Rust core (``rust/diffai-core/src/quantized/``) checks the parts
against each other, decodes them band by band in f32 as the references do, and computes the
statistics: no whole-tensor float copy is made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from . import _core, dequantized
from .records import TensorStats

# (kind, {role: tensor name}, {parameter: number}): what the core needs to decode a logical weight.
Spec = Tuple[str, Dict[str, str], Dict[str, float]]


@dataclass
class Logical:
    """One logical weight of a quantized model, decoded by the core from ``spec``."""

    name: str
    storage: str
    shape: Tuple[int, ...]
    members: List[str]
    nbytes: int
    spec: Spec
    model: object

    @property
    def info(self) -> Tuple[str, Tuple[int, ...], int]:
        return self.storage, self.shape, self.nbytes

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of its ``matrix`` view (every dim but the last flattened into rows) as
        float64 [r1 - r0, width] (the core's f32 values, widened exactly)."""
        raw = _core.quantized_values(self.model, self.spec, r0, r1)
        return np.frombuffer(raw, dtype=np.float32).astype(np.float64).reshape(r1 - r0, matrix(self.shape)[1])


# ----------------------------------------------------------------------------- reading parts


class _Parts:
    """The tensors of one source: headers, and small parts (configs, group indices) whole."""

    def __init__(self, src) -> None:
        self.src = src
        self.infos = src.tensor_infos()

    def has(self, name: str, *dtypes: str) -> bool:
        return name in self.infos and (not dtypes or self.infos[name][0] in dtypes)

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.infos[name][1])

    def whole(self, name: str) -> np.ndarray:
        """A small part (a shape, a JSON state, ``g_idx``) whole, as float64."""
        return np.frombuffer(_core.values(self.src.model, name), dtype=np.float64).reshape(self.shape(name))

    def logical(self, name: str, storage: str, shape: Tuple[int, ...], members: List[str], kind: str,
                roles: Dict[str, str], **params: float) -> Logical:
        return Logical(name, storage, shape, members, sum(self.infos[m][2] for m in members),
                       (kind, roles, {k: float(v) for k, v in params.items()}), self.src.model)


def matrix(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """The (rows, width) a tensor is read as: every dim but the last flattened into rows."""
    width = shape[-1] if shape else 1
    return (math.prod(shape) // width if width else 0), width


# ----------------------------------------------------------------------------- conventions


def _gptq(parts: _Parts, base: str, config: dict) -> Optional[Logical]:
    qweight, qzeros, scales, g_idx = (base + s for s in ("qweight", "qzeros", "scales", "g_idx"))
    if not (parts.has(qweight, "i32") and parts.has(qzeros, "i32") and parts.has(scales)):
        return None
    packed_k, n = parts.shape(qweight)
    # Without a config, the zeros' row length gives the width (N * b / 32 words).
    bits = int(config["bits"]) if "bits" in config else 32 * parts.shape(qzeros)[1] // max(n, 1)
    if bits not in (2, 3, 4, 8):
        return None
    k = packed_k * 32 // bits  # 3-bit: 32 codes in 3 words
    groups = parts.shape(scales)[0]
    if (packed_k * 32) % bits or (n * bits) % 32:
        return None
    if parts.shape(scales)[1] != n or parts.shape(qzeros) != (groups, n * bits // 32):
        return None
    group = k // groups
    roles = {"qweight": qweight, "qzeros": qzeros, "scales": scales}
    desc = ""
    if parts.has(g_idx):
        group_of = parts.whole(g_idx).astype(np.int64)
        if group_of.shape != (k,) or group_of.min(initial=0) < 0 or group_of.max(initial=0) >= groups:
            return None
        desc = "" if np.array_equal(group_of, np.arange(k) // group) else " desc_act"
        roles["g_idx"] = g_idx
    elif -(-k // max(group, 1)) > groups:
        return None
    members = list(roles.values())
    # AutoGPTQ stores zero - 1 (checkpoint_format gptq); gptq_v2 stores the zeros as they are.
    minus_one = config.get("checkpoint_format", "gptq") != "gptq_v2"
    return parts.logical(base + "weight", f"gptq-int{bits} g{group}{desc}", (n, k), members, "gptq", roles,
                         bits=bits, zeros_minus_one=minus_one)


def _awq(parts: _Parts, base: str, config: dict) -> Optional[Logical]:
    qweight, qzeros, scales = (base + s for s in ("qweight", "qzeros", "scales"))
    if not (parts.has(qweight, "i32") and parts.has(qzeros, "i32") and parts.has(scales)):
        return None
    k, packed_n = parts.shape(qweight)
    n = packed_n * 8
    groups = parts.shape(scales)[0]
    if parts.shape(scales) != (groups, n) or parts.shape(qzeros) != (groups, packed_n) or not groups or k % groups:
        return None
    roles = {"qweight": qweight, "qzeros": qzeros, "scales": scales}
    return parts.logical(base + "weight", f"awq-int4 g{k // groups}", (n, k), list(roles.values()), "awq", roles)


def _bnb_4bit(parts: _Parts, weight: str) -> Optional[Logical]:
    states = [n for n in (weight + ".quant_state.bitsandbytes__nf4", weight + ".quant_state.bitsandbytes__fp4")
              if parts.has(n, "u8")]
    absmax, qmap = weight + ".absmax", weight + ".quant_map"
    if not (states and parts.has(weight, "u8") and parts.has(absmax) and parts.has(qmap)):
        return None
    try:
        state = json.loads(parts.whole(states[0]).astype(np.uint8).tobytes())
        shape, block = tuple(int(d) for d in state["shape"]), int(state["blocksize"])
    except (ValueError, KeyError, TypeError):
        return None
    rows, width = matrix(shape)
    roles = {"weight": weight, "absmax": absmax, "quant_map": qmap}
    params = dict(rows=rows, width=width, blocksize=block)
    nested = parts.infos[absmax][0] == "u8"
    if nested:
        nested_roles = {"nested_absmax": weight + ".nested_absmax", "nested_quant_map": weight + ".nested_quant_map"}
        if not all(parts.has(n) for n in nested_roles.values()) or "nested_blocksize" not in state:
            return None
        roles.update(nested_roles)
        params.update(nested_blocksize=int(state["nested_blocksize"]),
                      nested_offset=float(state.get("nested_offset", 0.0)))
    numel = math.prod(shape)
    if parts.infos[weight][2] * 2 < numel or math.prod(parts.shape(absmax)) * block < numel:
        return None
    members = [weight, absmax, qmap, states[0]] + [roles[r] for r in ("nested_absmax", "nested_quant_map") if r in roles]
    kind = "nf4" if states[0].endswith("nf4") else "fp4"
    return parts.logical(weight, f"bnb-{kind} b{block}" + (" dq" if nested else ""), shape, members, "bnb4", roles,
                         **params)


def _bnb_int8(parts: _Parts, base: str) -> Optional[Logical]:
    weight, scb = base + "weight", base + "SCB"
    if not (parts.has(weight, "i8") and parts.has(scb) and len(parts.shape(weight)) == 2
            and parts.shape(scb) == parts.shape(weight)[:1]):
        return None
    members = [weight, scb] + [base + "weight_format"] * parts.has(base + "weight_format")
    return parts.logical(weight, "bnb-int8", parts.shape(weight), members, "bnb_int8", {"weight": weight, "scb": scb})


FP8 = ("f8_e4m3", "f8_e5m2")


def _fp8_scaled(parts: _Parts, base: str, scale_name: str, config: dict) -> Optional[Logical]:
    """float8 ``weight`` times a scale per block (DeepSeek ``weight_scale_inv``: 128x128 or the
    config's ``weight_block_size``) or per tensor / channel / group (compressed-tensors
    ``weight_scale``)."""
    weight = base + "weight"
    if not (parts.has(weight, *FP8) and parts.has(scale_name)) or len(parts.shape(weight)) != 2:
        return None
    n, k = parts.shape(weight)
    scale = parts.shape(scale_name)
    scale = (math.prod(scale), 1) if len(scale) < 2 else scale  # per tensor () / (1,), per channel (N,)
    if len(scale) != 2 or 0 in scale:
        return None
    if scale_name.endswith("_inv"):
        br, bc = (int(x) for x in config.get("weight_block_size", (128, 128)))
        kind = f"block{br}x{bc}"
    else:
        br, bc = -(-n // scale[0]), -(-k // scale[1])
        kind = "tensor" if scale == (1, 1) else "channel" if scale == (n, 1) else f"group{bc}"
    if br <= 0 or bc <= 0 or scale != (-(-n // br), -(-k // bc)):
        return None
    members = [weight, scale_name] + [base + "input_scale"] * parts.has(base + "input_scale")
    label = parts.infos[weight][0].replace("f8_", "fp8-")
    return parts.logical(weight, f"{label} {kind}", (n, k), members, "fp8", {"weight": weight, "scale": scale_name},
                         block_rows=br, block_cols=bc)


def _config_bits(config: dict) -> Set[int]:
    """The ``num_bits`` of the weights of every compressed-tensors ``config_groups`` entry."""
    groups = config.get("config_groups")
    if not isinstance(groups, dict):
        return set()
    return {int(g["weights"]["num_bits"]) for g in groups.values()
            if isinstance(g, dict) and isinstance(g.get("weights"), dict) and "num_bits" in g["weights"]}


def _pack_quantized(parts: _Parts, base: str, config: dict) -> Optional[Logical]:
    packed, scale, shape_name = base + "weight_packed", base + "weight_scale", base + "weight_shape"
    zero_point = base + "weight_zero_point"
    if not (parts.has(packed, "i32") and parts.has(scale) and parts.has(shape_name)):
        return None
    n, k = (int(x) for x in parts.whole(shape_name).reshape(-1)[:2])
    rows_p, words = parts.shape(packed)
    # Codes are a dense bit stream, ceil(k * b / 32) words a row; the width that gives this row
    # length, among the config's widths when it names them.
    widths = [b for b in range(1, 9) if -(-k * b // 32) == words]
    named = _config_bits(config)
    widths = [b for b in widths if b in named] if named else widths
    if len(widths) != 1 or rows_p != n:
        return None
    bits = widths[0]
    scales = math.prod(parts.shape(scale))
    groups = 1 if scales == 1 else scales // n if n else 0
    if not groups or (scales != 1 and groups * n != scales) or k % groups:
        return None
    group = k // groups
    members = [packed, scale, shape_name]
    roles = {"packed": packed, "scale": scale}
    asym = ""
    if parts.has(zero_point):
        zp_shape = parts.shape(zero_point)
        packed_zp = parts.infos[zero_point][0] == "i32" and zp_shape == (-(-n * bits // 32), groups)
        if not packed_zp and math.prod(zp_shape) != scales:
            return None
        members.append(zero_point)
        roles["zero_point"] = zero_point
        asym = " asym"
    kind = "tensor" if scales == 1 else "channel" if group == k else f"g{group}"
    return parts.logical(base + "weight", f"ct-int{bits} {kind}{asym}", (n, k), members, "pack_quantized",
                         roles, rows=n, width=k, bits=bits)


def _mxfp4(parts: _Parts, blocks: str) -> Optional[Logical]:
    base, sep = blocks[: -len("blocks") - 1], blocks[-len("blocks") - 1]
    scales = f"{base}{sep}scales"
    if not (parts.has(blocks, "u8") and parts.has(scales, "u8")):
        return None
    shape = parts.shape(blocks)
    if len(shape) < 2 or shape[-1] != 16 or parts.shape(scales) != shape[:-1]:
        return None
    logical = shape[:-2] + (shape[-2] * 32,)
    return parts.logical(base, "mxfp4 b32", logical, [blocks, scales], "mxfp4", {"blocks": blocks, "scales": scales})


# ----------------------------------------------------------------------------- detection


def _config(src) -> dict:
    """``quantization_config`` (or ``compression_config``) from the safetensors metadata or a
    ``config.json`` beside the file; {} when there is none or it does not parse."""
    texts = [src.metadata.get("quantization_config")]
    path = getattr(src, "path", None)
    if path is not None and (path.parent / "config.json").is_file():
        try:
            cfg = json.loads((path.parent / "config.json").read_text())
            texts.append(json.dumps(cfg.get("quantization_config") or cfg.get("compression_config") or {}))
        except (OSError, ValueError, AttributeError):
            pass
    for text in texts:
        try:
            cfg = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(cfg, dict) and cfg:
            return cfg
    return {}


def _is_awq(parts: _Parts, base: str, method: str) -> bool:
    if method in ("awq", "gptq"):
        return method == "awq"
    # Without a config, the packed axis tells them apart: AWQ packs N (scales are 8x wider).
    qweight, scales = base + "qweight", base + "scales"
    return (parts.has(qweight) and parts.has(scales) and len(parts.shape(scales)) == 2
            and parts.shape(scales)[1] == 8 * parts.shape(qweight)[1] and not parts.has(base + "g_idx"))


def _detect(parts: _Parts, name: str, config: dict, method: str) -> Optional[Logical]:
    """The logical weight whose characteristic part is ``name``, if its convention applies."""
    if name.endswith("qweight"):
        base = name[: -len("qweight")]
        return (_awq if _is_awq(parts, base, method) else _gptq)(parts, base, config)
    if name.endswith("weight_scale_inv") or name.endswith("weight_scale") and not parts.has(
            name[: -len("weight_scale")] + "weight_packed"):
        return _fp8_scaled(parts, name[: name.rindex("weight_scale")], name, config)
    if name.endswith("weight_packed"):
        return _pack_quantized(parts, name[: -len("weight_packed")], config)
    if name.endswith("SCB"):
        return _bnb_int8(parts, name[: -len("SCB")])
    if name.endswith(".absmax"):
        return _bnb_4bit(parts, name[: -len(".absmax")])
    return _mxfp4(parts, name)


# The part whose name announces a convention; _detect gathers the others around it.
_CHARACTERISTIC = ("qweight", "weight_scale_inv", "weight_scale", "weight_packed", "SCB", ".absmax",
                   "_blocks", ".blocks")


def find(src) -> Dict[str, Logical]:
    """The logical weights of ``src`` by logical name (empty when no convention applies)."""
    parts = _Parts(src)
    candidates = [n for n in parts.infos if n.endswith(_CHARACTERISTIC)]
    if not candidates:
        return {}
    config = _config(src)
    method = str(config.get("quant_method", "")).lower()
    out: Dict[str, Logical] = {}
    for name in candidates:
        try:
            found = _detect(parts, name, config, method)
        except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError):
            found = None  # parts that do not fit together (a truncated config, odd shapes): kept raw
        # A logical name that another, unfolded tensor already holds would hide it: keep raw.
        if found is not None and (found.name not in parts.infos or found.name in found.members):
            out[found.name] = found
    return out


def view_infos(src, logicals: Dict[str, Logical]) -> Dict[str, Tuple[str, Tuple[int, ...], int]]:
    """``src.tensor_infos()`` with each logical weight's parts replaced by the logical weight,
    where its first part stood."""
    folded = {m: lg for lg in logicals.values() for m in lg.members}
    out: Dict[str, Tuple[str, Tuple[int, ...], int]] = {}
    for n, info in src.tensor_infos().items():
        lg = folded.get(n)
        if lg is None:
            out[n] = info
        elif lg.name not in out:
            out[lg.name] = lg.info
    return out


# ----------------------------------------------------------------------------- statistics


def _record(info: Tuple[str, Tuple[int, ...], int], s) -> TensorStats:
    """A record from the core's ``(numel, mean, std, min, max, nan, inf, zeros)``."""
    dtype, shape, nbytes = info
    return TensorStats(shape, dtype, *s, nbytes)


def _spec(logicals: Dict[str, Logical], name: str) -> Optional[Spec]:
    return logicals[name].spec if name in logicals else None


def stats(src, logicals: Dict[str, Logical], name: str, threads: int = 0) -> TensorStats:
    """Statistics of one side's logical weight ``name`` over its dequantized values."""
    lg = logicals[name]
    return _record(lg.info, _core.quantized_stats(src.model, lg.spec, threads))


def info(src, logicals: Dict[str, Logical], name: str) -> Tuple[str, Tuple[int, ...], int]:
    """(dtype, shape, bytes) of a logical weight, or of the file's own tensor ``name``."""
    return logicals[name].info if name in logicals else src.tensor_infos()[name]


def compare(a, b, logicals_a: Dict[str, Logical], logicals_b: Dict[str, Logical], name: str, b_name: str,
            epsilon: float, threads: int = 0,
            heads: Tuple[Optional[int], Optional[int]] = (None, None)) -> dequantized.Dequantized:
    """Statistics of both sides and elementwise change metrics over dequantized values (the
    definitions of ``dequantized.compare``); a side that is not quantized is read as it is. A side
    with ``heads`` is a GGUF q/k weight, its rows read in Hugging Face order (llama.cpp's
    permutation undone)."""
    info_a, info_b = info(a, logicals_a, name), info(b, logicals_b, b_name)
    x, y, change = _core.quantized_pair(a.model, name, _spec(logicals_a, name), b.model, b_name,
                                        _spec(logicals_b, b_name), epsilon, threads, *heads)
    sa, sb = _record(info_a, x), _record(info_b, y)
    return dequantized.Dequantized(sa, sb, change, sa, sb)


def folded(logicals: Dict[str, Logical]) -> Set[str]:
    return {m for lg in logicals.values() for m in lg.members}
