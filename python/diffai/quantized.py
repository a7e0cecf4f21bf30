"""Quantized checkpoints as they ship in safetensors / ``.pt``: each packed weight and its
auxiliary tensors (scales, zeros, ``g_idx``, ``absmax`` ...) read as ONE logical weight under its
logical name (``...q_proj.weight``), valued by dequantization, stored as ``storage`` (``gptq-int4
g128``) in ``nbytes`` (all its parts).

Conventions (recognised from tensor names and dtypes, and ``quantization_config`` of a
``config.json`` beside the file or in the safetensors ``__metadata__``), with the reference each
decoder follows:

- GPTQ (AutoGPTQ / GPTQModel ``pack``): ``qweight`` int32 [K/(32/b), N] packed along K, low bits
  first; ``qzeros`` int32 [G, N/(32/b)] packed along N, stored minus 1 (``checkpoint_format``
  ``gptq``; ``gptq_v2`` stores them as they are); ``scales`` [G, N]; ``g_idx`` [K] the group of
  each input column (``desc_act`` permutes it). ``W[n, k] = scales[g, n] * (q[k, n] - zero[g, n])``
  with ``g = g_idx[k]``.
- AWQ (AutoAWQ GEMM ``pack``): ``qweight`` int32 [K, N/8] and ``qzeros`` [G, N/8] packed along N in
  the order ``[0, 2, 4, 6, 1, 3, 5, 7]``; ``W[n, k] = scales[k // g, n] * (q[k, n] - zero[k // g, n])``.
- bitsandbytes 4-bit (``bitsandbytes.functional.dequantize_4bit``): ``weight`` uint8, two codes a
  byte, high nibble first; ``absmax`` per ``blocksize`` elements (double quantization: uint8 codes
  of ``nested_quant_map`` times ``nested_absmax`` per ``nested_blocksize`` plus ``nested_offset``);
  the value is ``quant_map[code] * absmax``; shape and block sizes from ``quant_state.*`` JSON.
- bitsandbytes int8 (``int8_vectorwise_dequant``): ``weight`` int8 and ``SCB`` per row:
  ``W = q * SCB / 127``.
- FP8 with scales: ``weight`` float8 and ``weight_scale_inv`` per 128x128 block (DeepSeek-V3
  ``weight_dequant``; block from ``weight_block_size``) or compressed-tensors ``weight_scale``
  (per tensor, channel or group): ``W = w * scale`` of the element's block.
- compressed-tensors ``pack-quantized`` (``pack_to_int32``): ``weight_packed`` int32 [N, K/(32/b)],
  codes plus ``2**(b-1)``, low bits first; ``W = (code - 2**(b-1)) * weight_scale`` (symmetric).
- MXFP4 (gpt-oss, transformers ``convert_moe_packed_tensors``): ``*_blocks`` / ``*.blocks`` uint8
  [..., G, 16] with two E2M1 codes a byte (low nibble first) and ``*_scales`` uint8 [..., G] E8M0:
  ``W = LUT[code] * 2**(scale - 127)``; the logical shape is [..., G * 32] (the checkpoint's own
  layout, not transformers' transposed one).

Tensors of a convention that does not apply (another bit width, asymmetric pack-quantized) stay
visible as their raw tensors. Values are produced a band of rows at a time in numpy (bounded
memory, slower than the Rust kernels); no whole-tensor float copy is made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from . import _core, dequantized
from .records import TensorStats

BAND_ELEMENTS = 1 << 20  # logical values per band (8 MiB of float64 per side, a few temporaries)
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AWQ packs column order_map[i] into nibble i
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


@dataclass
class Logical:
    """One logical weight of a quantized model. ``rows(r0, r1)`` gives rows [r0, r1) of its
    ``matrix`` view (every dim but the last flattened into rows) as float64 [r1 - r0, width]."""

    name: str
    storage: str
    shape: Tuple[int, ...]
    members: List[str]
    nbytes: int
    rows: Callable[[int, int], np.ndarray]

    @property
    def info(self) -> Tuple[str, Tuple[int, ...], int]:
        return self.storage, self.shape, self.nbytes


# ----------------------------------------------------------------------------- reading parts


class _Parts:
    """The tensors of one source, read as float64 (exact for every integer and float code)."""

    def __init__(self, src) -> None:
        self.src = src
        self.infos = src.tensor_infos()

    def has(self, name: str, *dtypes: str) -> bool:
        return name in self.infos and (not dtypes or self.infos[name][0] in dtypes)

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.infos[name][1])

    def whole(self, name: str) -> np.ndarray:
        """An auxiliary tensor (scales, zeros: a fraction of the weight's size) whole."""
        return np.frombuffer(_core.values(self.src.model, name), dtype=np.float64).reshape(self.shape(name))

    def rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        width = matrix(self.shape(name))[1]
        raw = _core.values(self.src.model, name, r0 * width, (r1 - r0) * width)
        return np.frombuffer(raw, dtype=np.float64).reshape(r1 - r0, width)

    def columns(self, name: str, c0: int, c1: int) -> np.ndarray:
        """Columns [c0, c1) of every row of a 2-D tensor (one strided read in the core)."""
        raw = _core.column_values(self.src.model, name, c0, c1)
        return np.frombuffer(raw, dtype=np.float64).reshape(-1, c1 - c0)


def matrix(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """The (rows, width) a tensor is read as: every dim but the last flattened into rows."""
    width = shape[-1] if shape else 1
    return (math.prod(shape) // width if width else 0), width


def _words(x: np.ndarray) -> np.ndarray:
    """int32 codes read as float64 -> their unsigned 32-bit patterns."""
    return x.astype(np.int64) & 0xFFFFFFFF


def _unpack(words: np.ndarray, bits: int, axis: int, order: Optional[List[int]] = None) -> np.ndarray:
    """Split each 32-bit word into 32/bits codes, low bits first, along ``axis`` (code i of a
    word holds element ``order[i]`` of its run when ``order`` is given)."""
    per = 32 // bits
    shifts = np.arange(per, dtype=np.int64) * bits
    codes = (words[..., None] >> shifts) & ((1 << bits) - 1)  # [..., word, code]
    if order is not None:
        codes = codes[..., np.argsort(order)]
    codes = np.moveaxis(codes, -1, axis + 1) if axis == 0 else codes
    shape = list(words.shape)
    shape[axis] *= per
    return codes.reshape(shape)


# ----------------------------------------------------------------------------- conventions


def _gptq(parts: _Parts, base: str, config: dict) -> Optional[Logical]:
    qweight, qzeros, scales, g_idx = (base + s for s in ("qweight", "qzeros", "scales", "g_idx"))
    bits = int(config.get("bits", 4))
    if bits not in (2, 4, 8) or not (parts.has(qweight, "i32") and parts.has(qzeros, "i32") and parts.has(scales)):
        return None
    per = 32 // bits
    packed_k, n = parts.shape(qweight)
    k = packed_k * per
    groups = parts.shape(scales)[0]
    if parts.shape(scales)[1] != n or parts.shape(qzeros) != (groups, n // per):
        return None
    zeros = _unpack(_words(parts.whole(qzeros)), bits, axis=1)
    if config.get("checkpoint_format", "gptq") != "gptq_v2":
        zeros = (zeros + 1) & ((1 << bits) - 1)  # AutoGPTQ stores zero - 1 (a zero of 0 wraps)
    scale = parts.whole(scales)
    if parts.has(g_idx):
        group_of = parts.whole(g_idx).astype(np.int64)
    else:
        group_of = np.arange(k) // max(k // groups, 1)
    if group_of.shape != (k,) or group_of.min(initial=0) < 0 or group_of.max(initial=0) >= groups:
        return None

    def rows(r0: int, r1: int) -> np.ndarray:
        q = _unpack(_words(parts.columns(qweight, r0, r1)), bits, axis=0)  # [K, r1 - r0]
        return ((q - zeros[group_of, r0:r1]) * scale[group_of, r0:r1]).T

    group = k // groups
    desc = " desc_act" if parts.has(g_idx) and not np.array_equal(group_of, np.arange(k) // group) else ""
    members = [m for m in (qweight, qzeros, scales, g_idx) if parts.has(m)]
    return Logical(base + "weight", f"gptq-int{bits} g{group}{desc}", (n, k), members,
                   sum(parts.infos[m][2] for m in members), rows)


def _awq(parts: _Parts, base: str, config: dict) -> Optional[Logical]:
    qweight, qzeros, scales = (base + s for s in ("qweight", "qzeros", "scales"))
    if not (parts.has(qweight, "i32") and parts.has(qzeros, "i32") and parts.has(scales)):
        return None
    k, packed_n = parts.shape(qweight)
    n = packed_n * 8
    groups = parts.shape(scales)[0]
    if parts.shape(scales) != (groups, n) or parts.shape(qzeros) != (groups, packed_n) or k % groups:
        return None
    group = k // groups
    zeros = _unpack(_words(parts.whole(qzeros)), 4, axis=1, order=AWQ_ORDER)
    scale = parts.whole(scales)
    group_of = np.arange(k) // group

    def rows(r0: int, r1: int) -> np.ndarray:
        w0, w1 = r0 // 8, -(-r1 // 8)
        q = _unpack(_words(parts.columns(qweight, w0, w1)), 4, axis=1, order=AWQ_ORDER)
        q = q[:, r0 - w0 * 8: r1 - w0 * 8]
        return ((q - zeros[group_of, r0:r1]) * scale[group_of, r0:r1]).T

    members = [qweight, qzeros, scales]
    return Logical(base + "weight", f"awq-int4 g{group}", (n, k), members,
                   sum(parts.infos[m][2] for m in members), rows)


def _bnb_4bit(parts: _Parts, weight: str) -> Optional[Logical]:
    states = [n for n in (weight + ".quant_state.bitsandbytes__nf4", weight + ".quant_state.bitsandbytes__fp4")
              if parts.has(n, "u8")]
    absmax_name, qmap_name = weight + ".absmax", weight + ".quant_map"
    if not (states and parts.has(weight, "u8") and parts.has(absmax_name) and parts.has(qmap_name)):
        return None
    try:
        state = json.loads(parts.whole(states[0]).astype(np.uint8).tobytes())
        shape, block = tuple(int(d) for d in state["shape"]), int(state["blocksize"])
    except (ValueError, KeyError, TypeError):
        return None
    code = parts.whole(qmap_name).astype(np.float32)
    absmax = parts.whole(absmax_name)
    members = [weight, absmax_name, qmap_name, states[0]]
    nested = parts.infos[absmax_name][0] == "u8"
    if nested:
        nested_names = [weight + ".nested_absmax", weight + ".nested_quant_map"]
        if not all(parts.has(n) for n in nested_names) or "nested_blocksize" not in state:
            return None
        members += nested_names
        n_absmax, n_code = (parts.whole(n).astype(np.float32) for n in nested_names)
        # bitsandbytes: dequantize_blockwise(absmax codes) + offset, in float32
        blocks = np.arange(absmax.size) // int(state["nested_blocksize"])
        absmax = (n_code[absmax.astype(np.int64)] * n_absmax[blocks]).astype(np.float32)
        absmax = absmax + np.float32(state.get("nested_offset", 0.0))
    absmax = absmax.astype(np.float32)
    numel = math.prod(shape)
    if parts.infos[weight][2] * 2 < numel or absmax.size * block < numel:
        return None
    width = matrix(shape)[1]

    def rows(r0: int, r1: int) -> np.ndarray:
        e0, e1 = r0 * width, r1 * width
        b0, b1 = e0 // 2, -(-e1 // 2)
        raw = np.frombuffer(_core.values(parts.src.model, weight, b0, b1 - b0), dtype=np.float64).astype(np.int64)
        codes = np.stack([raw >> 4, raw & 0xF], axis=1).reshape(-1)[e0 - 2 * b0: e1 - 2 * b0]
        vals = code[codes] * absmax[np.arange(e0, e1) // block]  # float32 like bitsandbytes
        return vals.astype(np.float64).reshape(r1 - r0, width)

    kind = "nf4" if states[0].endswith("nf4") else "fp4"
    return Logical(weight, f"bnb-{kind} b{block}" + (" dq" if nested else ""), shape, members,
                   sum(parts.infos[m][2] for m in members), rows)


def _bnb_int8(parts: _Parts, base: str) -> Optional[Logical]:
    weight, scb = base + "weight", base + "SCB"
    if not (parts.has(weight, "i8") and parts.has(scb) and len(parts.shape(weight)) == 2
            and parts.shape(scb) == parts.shape(weight)[:1]):
        return None
    row_scale = parts.whole(scb).astype(np.float32) / np.float32(127)
    members = [weight, scb] + [base + "weight_format"] * parts.has(base + "weight_format")

    def rows(r0: int, r1: int) -> np.ndarray:
        return parts.rows(weight, r0, r1) * row_scale[r0:r1, None]

    return Logical(weight, "bnb-int8", parts.shape(weight), members, sum(parts.infos[m][2] for m in members), rows)


FP8 = ("f8_e4m3", "f8_e5m2")


def _fp8_scaled(parts: _Parts, base: str, scale_name: str, config: dict) -> Optional[Logical]:
    """float8 ``weight`` times a scale per block (DeepSeek ``weight_scale_inv``: 128x128 or the
    config's ``weight_block_size``) or per tensor / channel / group (compressed-tensors
    ``weight_scale``). Products of a float8 and a float32 are exact in float64."""
    weight = base + "weight"
    if not (parts.has(weight, *FP8) and parts.has(scale_name)) or len(parts.shape(weight)) != 2:
        return None
    n, k = parts.shape(weight)
    scale = parts.whole(scale_name)
    scale = scale.reshape(-1, 1) if scale.ndim < 2 else scale  # per tensor () / (1,), per channel (N,)
    if scale.ndim != 2:
        return None
    if scale_name.endswith("_inv"):
        br, bc = (int(x) for x in config.get("weight_block_size", (128, 128)))
        kind = f"block{br}x{bc}"
    else:
        br, bc = -(-n // scale.shape[0]), -(-k // scale.shape[1])
        kind = "tensor" if scale.size == 1 else "channel" if scale.shape == (n, 1) else f"group{bc}"
    if scale.shape != (-(-n // br), -(-k // bc)):
        return None
    column_block = np.arange(k) // bc
    members = [weight, scale_name] + [base + "input_scale"] * parts.has(base + "input_scale")

    def rows(r0: int, r1: int) -> np.ndarray:
        return parts.rows(weight, r0, r1) * scale[np.arange(r0, r1)[:, None] // br, column_block]

    label = parts.infos[weight][0].replace("f8_", "fp8-")
    return Logical(weight, f"{label} {kind}", (n, k), members, sum(parts.infos[m][2] for m in members), rows)


def _pack_quantized(parts: _Parts, base: str) -> Optional[Logical]:
    packed, scale_name, shape_name = base + "weight_packed", base + "weight_scale", base + "weight_shape"
    if not (parts.has(packed, "i32") and parts.has(scale_name) and parts.has(shape_name)):
        return None
    if parts.has(base + "weight_zero_point"):
        return None  # asymmetric pack-quantized: not decoded, its raw tensors stay visible
    n, k = (int(x) for x in parts.whole(shape_name).reshape(-1)[:2])
    rows_p, words = parts.shape(packed)
    bits = 32 * words // k if k else 0
    scale = parts.whole(scale_name).reshape(n, -1) if parts.shape(scale_name) else None
    if bits not in (4, 8) or rows_p != n or words * 32 != k * bits or scale is None or k % scale.shape[1]:
        return None
    group = k // scale.shape[1]
    column_group = np.arange(k) // group

    def rows(r0: int, r1: int) -> np.ndarray:
        codes = _unpack(_words(parts.rows(packed, r0, r1)), bits, axis=1) - (1 << (bits - 1))
        return codes * scale[r0:r1][:, column_group]

    members = [packed, scale_name, shape_name]
    kind = "channel" if group == k else f"g{group}"
    return Logical(base + "weight", f"ct-int{bits} {kind}", (n, k), members,
                   sum(parts.infos[m][2] for m in members), rows)


def _mxfp4(parts: _Parts, blocks: str) -> Optional[Logical]:
    base, sep = blocks[: -len("blocks") - 1], blocks[-len("blocks") - 1]
    scales = f"{base}{sep}scales"
    if not (parts.has(blocks, "u8") and parts.has(scales, "u8")):
        return None
    shape = parts.shape(blocks)
    if len(shape) < 2 or shape[-1] != 16 or parts.shape(scales) != shape[:-1]:
        return None
    logical = shape[:-2] + (shape[-2] * 32,)
    groups = shape[-2]

    def rows(r0: int, r1: int) -> np.ndarray:
        raw = parts.rows(blocks, r0 * groups, r1 * groups).astype(np.int64)  # [row*G, 16]
        codes = np.stack([raw & 0xF, raw >> 4], axis=2).reshape(raw.shape[0], 32)  # low nibble first
        exponent = parts.rows(scales, r0, r1).reshape(-1, 1) - 127
        return np.ldexp(E2M1[codes].astype(np.float64), exponent.astype(np.int64)).reshape(r1 - r0, -1)

    members = [blocks, scales]
    return Logical(base, "mxfp4 b32", logical, members, sum(parts.infos[m][2] for m in members), rows)


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
        return _pack_quantized(parts, name[: -len("weight_packed")])
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


def _reader(src, logicals: Dict[str, Logical], name: str):
    """(info, rows(r0, r1)) of a logical weight or of a plain tensor (read as float64)."""
    if name in logicals:
        return logicals[name].info, logicals[name].rows
    parts = _Parts(src)
    return parts.infos[name], lambda r0, r1: parts.rows(name, r0, r1)


def _bands(shape: Tuple[int, ...]) -> Iterator[Tuple[int, int]]:
    rows, width = matrix(tuple(shape))
    step = max(1, BAND_ELEMENTS // max(width, 1))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def stats(src, logicals: Dict[str, Logical], name: str) -> TensorStats:
    """Statistics of one side's tensor ``name`` over its dequantized values."""
    info, rows = _reader(src, logicals, name)
    acc = dequantized._Moments()
    for r0, r1 in _bands(info[1]):
        acc.add(rows(r0, r1).reshape(-1))
    return acc.stats(info)


def compare(a, b, logicals_a: Dict[str, Logical], logicals_b: Dict[str, Logical], name: str, b_name: str,
            epsilon: float) -> dequantized.Dequantized:
    """Statistics of both sides and elementwise change metrics over dequantized values (the
    definitions of ``dequantized.compare``); a side that is not quantized is read as it is."""
    (info_a, rows_a), (info_b, rows_b) = _reader(a, logicals_a, name), _reader(b, logicals_b, b_name)
    acc = [dequantized._Moments(), dequantized._Moments()]
    pair = dequantized._PairSums()
    for r0, r1 in _bands(info_a[1]):
        va, vb = rows_a(r0, r1).reshape(-1), rows_b(r0, r1).reshape(-1)
        acc[0].add(va)
        acc[1].add(vb)
        pair.add(va, vb, epsilon)
    sa, sb = acc[0].stats(info_a), acc[1].stats(info_b)
    change = pair.metrics()
    return dequantized.Dequantized(sa, sb, change, sa, sb)


def folded(logicals: Dict[str, Logical]) -> Set[str]:
    return {m for lg in logicals.values() for m in lg.members}
