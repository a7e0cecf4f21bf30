"""Matching tensor names across two models whose names differ: wrapper prefixes (DDP's
``module.``, ``torch.compile``'s ``_orig_mod.``, a checkpoint's ``{'model': ...}`` container)
stripped when that pairs more tensors, and renamed tensors found by their contents."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from . import _core
from .errors import DiffaiError
from .records import TensorComparison, TensorStats

# Prefixes that wrappers and checkpoint containers put before every parameter name.
KNOWN_PREFIXES = ("module.", "_orig_mod.", "model.", "state_dict.")
_MAX_DEPTH = 3  # prefixes nest: {'model': ddp.state_dict()} gives 'model.module.'
# Rounds of content comparisons between removed and added tensors with the same shape, dtype and
# exact statistics (count of NaN/inf/zero, min, max): each round tries one more candidate each.
RENAME_ROUNDS = 8

Infos = Dict[str, Tuple[str, Tuple[int, ...], int]]  # name -> (dtype, shape, nbytes)


def parse_strip_prefix(spec: str) -> Tuple[str, str]:
    """``--strip-prefix A:B``: A is stripped from a's names, B from b's (either may be empty)."""
    if ":" not in spec:
        raise DiffaiError(f"--strip-prefix {spec!r}: expected A:B (the prefix stripped from a's names, "
                          f"then b's; either may be empty, e.g. ':module.')")
    a_prefix, b_prefix = spec.split(":", 1)
    if not a_prefix and not b_prefix:
        raise DiffaiError("--strip-prefix ':': give a prefix for a, for b or both")
    return a_prefix, b_prefix


def _candidates(names: List[str]) -> List[str]:
    """Prefixes worth trying on one side: "" and, nested up to ``_MAX_DEPTH``, each known prefix
    some name starts with, and the first component when every name shares it (a container key)."""
    out = [""]
    frontier = [""]
    for _ in range(_MAX_DEPTH):
        nxt = []
        for p in frontier:
            rest = [n[len(p):] for n in names if n.startswith(p)]
            found = {k for k in KNOWN_PREFIXES if any(r.startswith(k) for r in rest)}
            heads = {r.split(".", 1)[0] for r in rest}
            if len(heads) == 1 and all("." in r for r in rest):
                found.add(heads.pop() + ".")
            nxt += [p + k for k in sorted(found) if p + k not in out]
        out += nxt
        frontier = nxt
    return out


def _stripped(names: Iterable[str], prefix: str) -> Optional[Dict[str, str]]:
    """Name without ``prefix`` (names lacking it kept) -> name; None when two names collide."""
    out: Dict[str, str] = {}
    for n in names:
        key = n[len(prefix):] if prefix and n.startswith(prefix) else n
        if not key or key in out:
            return None
        out[key] = n
    return out


def choose_prefixes(names_a: List[str], names_b: List[str]) -> Optional[Tuple[str, str, int]]:
    """The (a prefix, b prefix, tensors paired) that pairs the most names, when that is more than
    the names pair as they are; ties go to the shorter prefixes."""
    paired_as_is = len(set(names_a).intersection(names_b))
    if paired_as_is == min(len(names_a), len(names_b)):
        return None  # nothing left to pair (the common case, decided in one set operation)
    keys_a = {p: _stripped(names_a, p) for p in _candidates(names_a)}
    keys_b = {p: _stripped(names_b, p) for p in _candidates(names_b)}
    best = None
    for pa, ka in keys_a.items():
        for pb, kb in keys_b.items():
            if ka is None or kb is None or (pa, pb) == ("", ""):
                continue
            score = len(ka.keys() & kb.keys())
            if score > paired_as_is and (best is None or (score, -len(pa + pb)) > (best[2], -len(best[0] + best[1]))):
                best = (pa, pb, score)
    return best


def align_names(infos_a: Infos, infos_b: Infos, a_prefix: str, b_prefix: str):
    """What ``_core.align`` gives for names matched after stripping the prefixes: a's names, those
    paired with a same-shape / other-shape tensor of b, b's unpaired names; and b's name of each
    paired a name. Tensors are called by their own file's names."""
    keys_a, keys_b = _stripped(infos_a, a_prefix), _stripped(infos_b, b_prefix)
    if keys_a is None or keys_b is None:
        side = "a" if keys_a is None else "b"
        raise DiffaiError(f"--strip-prefix: stripping {(a_prefix if side == 'a' else b_prefix)!r} gives two "
                          f"tensors of {side} the same name")
    return pair_by_keys(infos_a, infos_b, keys_a, keys_b)


def pair_by_keys(infos_a: Infos, infos_b: Infos, keys_a: Dict[str, str], keys_b: Dict[str, str]):
    """``align_names``' answer for names paired by a common key (key -> own name on each side:
    a prefix stripped, or a GGUF name mapped to its Hugging Face name)."""
    b_of = {keys_a[k]: keys_b[k] for k in keys_a if k in keys_b}
    same = [n for n, m in b_of.items() if infos_a[n][1] == infos_b[m][1]]
    reshaped = [n for n, m in b_of.items() if infos_a[n][1] != infos_b[m][1]]
    added = [n for k, n in keys_b.items() if k not in keys_a]
    return list(infos_a), same, reshaped, added, b_of


def _content_key(st: TensorStats):
    """Exact facts equal contents share (no rounded sum): dtype, shape, NaN/inf/zero counts, range."""
    return st.dtype, tuple(st.shape), st.nan_count, st.inf_count, st.zero_count, st.min, st.max


def find_renames(model_a, model_b, removed: Dict[str, TensorStats], added: Dict[str, TensorStats], threads: int,
                 prefix: str) -> Dict[str, Tuple[str, TensorComparison]]:
    """a's removed name -> (b's added name, their comparison) for tensors equal element by element.
    Candidates share ``_content_key``; each is confirmed by the core's pair statistics (every
    element equal, NaN matching NaN), a round of candidates per ``pair_stats`` call."""
    by_key: Dict[tuple, List[str]] = {}
    for name, st in added.items():
        by_key.setdefault(_content_key(st), []).append(name)
    pending = {old: list(by_key[k]) for old, st in removed.items() if (k := _content_key(st)) in by_key}
    found: Dict[str, Tuple[str, TensorComparison]] = {}
    taken = set()
    for _ in range(RENAME_ROUNDS):
        trial, used = [], set()
        for old, candidates in pending.items():
            new = next((c for c in candidates if c not in taken and c not in used), None)
            if new is not None:
                trial.append((old, new))
                used.add(new)
        if not trial:
            break
        comparisons = _core.pair_stats(model_a, model_b, [o for o, _ in trial], 0.0, threads,
                                       b_names=[n for _, n in trial], prefix=prefix)
        for (old, new), c in zip(trial, comparisons):
            pending[old].remove(new)
            if c.status == "unchanged":
                found[old] = (new, c)
                taken.add(new)
                del pending[old]
    return found
