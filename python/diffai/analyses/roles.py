"""What each tensor is for, decided once per diff from its name, dtypes, shape and siblings: the
health rules (health.py), the layer families (common.families) and the update lists are applied
per role. docs/analyses.md ("Tensor roles") lists the same rules in the same order."""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Dict, Optional, Tuple

from ..names import EMBED_MODULE
from .common import ZERO_DIGITS, Context, is_float, is_optimizer_state

WEIGHT = "weight"  # a matrix or kernel (>= 2-D float)
BIAS = "bias"
NORM_SCALE = "norm_scale"
NORM_SHIFT = "norm_shift"
NORM_STAT = "norm_stat"  # BatchNorm running_mean / running_var buffers
EMBEDDING = "embedding"
INDEX = "index"  # index, counter or mask buffer: position_ids, num_batches_tracked, causal masks
QUANT_SCALE = "quant_scale"
QUANT_CODES = "quant_codes"  # integer codes that a quant_scale dequantizes
OPTIMIZER = "optimizer_state"
OTHER = "other"

ROLES = (WEIGHT, BIAS, NORM_SCALE, NORM_SHIFT, NORM_STAT, EMBEDDING, INDEX, QUANT_SCALE, QUANT_CODES, OPTIMIZER,
         OTHER)
# Roles whose values are learned weights with a meaningful scale: magnitude, collapse, spread and
# cosine rules apply to them.
LEARNED = (WEIGHT, EMBEDDING, BIAS, NORM_SCALE, NORM_SHIFT)
# Roles whose relative update ||delta||/||W_a|| is a meaningful "jump": biases and norm shifts start
# at (or near) zero, so their ratio is large for ordinary updates.
JUMP_ROLES = (WEIGHT, EMBEDDING, NORM_SCALE)
# Roles an optimizer trains (memory estimate): integer codes stand for weights trained in float.
TRAINABLE = LEARNED + (QUANT_CODES, OTHER)

QUANT_SUFFIXES = (".scale", ".scales", "_scale", ".zero_point", "_zero_point", ".scale_inv", "_scale_inv")
_INDEX_NAME = re.compile(r"(^|[._])(position_ids|token_type_ids|\w*_ids|ids|num_batches_tracked|\w*_index|indices"
                         r"|index|step|steps|masked_bias|mask|attn_mask|causal_mask)$")
_NORM_MODULE = re.compile(r"(^|[._])(\w*norm\w*|ln(_?\w+)?|ln\d*|bn\d*|\w*_ln|gn\d*)$", re.IGNORECASE)


def roles(ctx: Context) -> Dict[str, str]:
    """Role of every tensor of the diff (both sides considered), computed once per context."""
    return ctx.memo("roles", lambda: _roles(ctx))


# ASCII digits: no rule below tells one digit from another (the patterns see digits only through
# \d, \w and [0-9]-free literals, and repeat them freely), so names equal but for their digits
# share a role: each decided once with every digit written 0 (ZERO_DIGITS).


def _roles(ctx: Context) -> Dict[str, str]:
    """Each name's role. The rules that look at a tensor's siblings (a scale beside integer codes)
    run per name; the others depend only on the name's pattern, rank and whether a side is not
    float, so each such combination is decided once (a 20k-tensor model has a few dozen), from
    columns of every tensor's ranks and dtypes."""
    names = ctx.names
    templates = "\x00".join(names).translate(ZERO_DIGITS).split("\x00")
    if len(templates) != len(names):  # a name holding NUL
        templates = [n.translate(ZERO_DIGITS) for n in names]
    holds_codes = any(ctx.holds_codes(src) for _, a, b in ctx.result.sources for src in (a, b))
    sides = [list(map(attrgetter(side), ctx.all)) for side in ("a", "b")]
    # (template, rank of a, rank of b, dtype of a, dtype of b) of every tensor: -1 and None for a
    # side without it.
    ranks = [[len(st.shape) if st is not None else -1 for st in stats] if None in stats
             else list(map(len, map(attrgetter("shape"), stats))) for stats in sides]
    dtypes = [[st.dtype if st is not None else None for st in stats] if None in stats
              else list(map(attrgetter("dtype"), stats)) for stats in sides]
    keys = list(zip(templates, *ranks, *dtypes))
    by_key: Dict[Tuple[str, int, int, Optional[str], Optional[str]], Optional[str]] = {}
    for key in dict.fromkeys(keys):
        template, rank_a, rank_b, dtype_a, dtype_b = key
        # A side that is not float needs the per-name look (a quantized logical weight's values are floats).
        by_name = holds_codes or template.endswith(QUANT_SUFFIXES) or any(
            d is not None and not is_float(d) for d in (dtype_a, dtype_b))
        by_key[key] = None if by_name else _name_role(template, max(rank_a, rank_b), False)
    out = dict(zip(names, map(by_key.__getitem__, keys)))
    per_name = {key for key, role in by_key.items() if role is None}
    decided: Dict[Tuple[str, int, bool], str] = {}
    for c, key in zip(ctx.all, keys) if per_name else ():
        if key not in per_name:
            continue
        name = c.name
        if holds_codes or name.endswith(QUANT_SUFFIXES):
            out[name] = _role(ctx, c)
            continue
        rule = (key[0], max(key[1], key[2]), _not_float(ctx, c))
        role = decided.get(rule)
        if role is None:
            role = decided[rule] = _name_role(*rule)
        out[name] = role
    return out


def _quant_base(ctx: Context, name: str) -> Optional[str]:
    """The integer tensor that ``name`` scales, if ``name`` is ``<base><suffix>`` beside one."""
    if not name.endswith(QUANT_SUFFIXES):
        return None  # most names: one test instead of one per suffix
    for suffix in QUANT_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            for side in ("a", "b"):
                if ctx.has(base, side):
                    src, local = ctx.source(base, side)
                    if not is_float(src.tensor_infos()[local][0]):
                        return base
    return None


def _role(ctx: Context, c) -> str:
    name = c.name
    sides = [s for s in (c.a, c.b) if s is not None]
    rank = max(len(s.shape) for s in sides)
    if is_optimizer_state(name):
        return OPTIMIZER
    if _quant_base(ctx, name) is not None:
        return QUANT_SCALE
    for side, st in (("a", c.a), ("b", c.b)):
        if st is not None and ctx.has_scale(name, side):
            return QUANT_CODES
    return _name_role(name, rank, _not_float(ctx, c))


def _not_float(ctx: Context, c) -> bool:
    """Whether a side holds values that are not floats. A quantized logical weight's storage
    (``gptq-int4 g128``) is no float dtype, but its values are: its reader decodes them."""
    a, b = c.a, c.b  # the dtype first: most tensors are float, and then no lookup is made
    return ((a is not None and not is_float(a.dtype) and ctx.logical(c.name, "a") is None)
            or (b is not None and not is_float(b.dtype) and ctx.logical(c.name, "b") is None))


def _name_role(name: str, rank: int, not_float: bool) -> str:
    """The rules that look at the name, the largest rank of the two sides and whether a side is
    not float only (the optimizer-state rule first, as in ``_role``)."""
    module, _, last = name.rpartition(".")
    if is_optimizer_state(name):
        return OPTIMIZER
    if not_float or _INDEX_NAME.search(name) \
            or (last == "bias" and rank >= 3 and "attn" in module):  # GPT-2's causal mask buffer
        return INDEX
    if last in ("running_mean", "running_var"):
        return NORM_STAT
    if rank <= 1 and _NORM_MODULE.search(module):
        if last in ("weight", "gamma", "scale"):
            return NORM_SCALE
        if last in ("bias", "beta"):
            return NORM_SHIFT
    if rank >= 2 and EMBED_MODULE.search(module):
        return EMBEDDING
    if "bias" in last and rank <= 1:
        return BIAS
    if rank >= 2:
        return WEIGHT
    return OTHER
