"""Rendering results: text (the default, like a diff tool), JSON and YAML (a stable list of
single-key records), and inspect listings."""

from __future__ import annotations

import functools
import json
import math
import re
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .records import (
    EntrySkipped,
    FileChanged,
    MetadataChanged,
    Record,
    ScalarChanged,
    TensorAdded,
    TensorRemoved,
    TensorRenamed,
    TensorShapeChanged,
    TensorStats,
    TensorStatsChanged,
    json_safe,
)

Style = Callable[[str, str], str]

# What a terminal acts on instead of printing: C0 controls (ESC, BEL, CR, LF, ...), DEL, C1
# controls, Unicode line/paragraph separators, bidirectional marks and overrides (which reorder
# what is read), and lone surrogates (a file name that is not UTF-8, which cannot even be written
# out). Names and strings read from a file are shown with these escaped, in text, Markdown and the
# HTML report, so a tensor name cannot fake lines or retitle the terminal; JSON and YAML keep them
# exact (escaped by their own syntax).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_one(m: "re.Match[str]") -> str:
    c = ord(m[0])
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with control characters as ``\\x1b`` / ``\\u2028`` escapes (except those in
    ``keep``, e.g. the line breaks of a whole Markdown document)."""
    if text.isprintable():
        return text
    if keep:
        return keep.join(escape_controls(part) for part in text.split(keep))
    return _CONTROL.sub(_escape_one, text)



def plain(text: str, _color: str) -> str:
    return text


def num(x: Optional[float]) -> str:
    """Four decimals where that is readable, otherwise four significant digits; whole numbers
    (below 1e12) as integers."""
    if x is None:
        return "n/a"
    if type(x) is float and 1e-3 <= abs(x) < 1e5 and not x.is_integer():
        return f"{x:.4f}"  # most numbers of a diff, first (this runs ~7 times per tensor line)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e12):
        return str(int(x))
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.4f}"
    return f"{x:.4g}"


def json_records(result) -> List[Dict[str, Any]]:
    """The machine-readable form: one single-key record per difference, so that the list's length
    is the number of changes. Analyses (``{"QuantizationAnalysis": {...}}``) come first when the
    result carries them for JSON (the CLI: only when an analysis flag was given)."""
    out: List[Dict[str, Any]] = [a.to_json() for a in _json_analyses(result)]
    out.extend(r.to_json() for r in result.records)
    return json_safe(out)


def to_json(result) -> str:
    """A JSON list: each analysis laid out over lines, then one line per record (so a grep for a
    tensor's name finds its whole record). Records go straight to the C encoder: json's
    ``indent=`` switches to its pure-Python encoder, which took seconds on a 20,000-tensor diff."""
    parts = [_layout(a, "  ") for a in _analyses_json(result)]
    parts.extend(result.record_json_lines())  # tensor records written by the core
    return "[\n  " + ",\n  ".join(parts) + "\n]" if parts else "[]"


def _json_analyses(result) -> List[Any]:
    """The analyses JSON carries, with how names were aligned: both or neither (the list of a
    plain diff holds one record per change)."""
    if not (result.analyses_in_json and result.analyses):
        return []
    return [*result.json_extras(), *result.analyses]


def _analyses_json(result) -> List[Dict[str, Any]]:
    return json_safe([a.to_json() for a in _json_analyses(result)])


def dumps(value: Any) -> str:
    """JSON laid out for reading: containers one item per line, and a container of plain values
    (a tensor's statistics, a shape, a summary) on one line through the C encoder. ``value`` must
    be JSON-safe already (see ``json_safe``)."""
    return _layout(value, "")


def _plain(v: Any) -> bool:
    return not isinstance(v, (dict, list)) or (isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v))


def _one_line(v: Any) -> bool:
    """A value, or a container of plain values (a dict may hold lists of them), fits one line."""
    return _plain(v) or isinstance(v, dict) and all(_plain(x) for x in v.values())


def _layout(v: Any, pad: str) -> str:
    if _one_line(v):
        return json.dumps(v)
    inner = pad + "  "
    if isinstance(v, dict):
        items = (f"{inner}{json.dumps(k)}: {_layout(x, inner)}" for k, x in v.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return "[\n" + ",\n".join(inner + _layout(x, inner) for x in v) + "\n" + pad + "]"


def to_yaml(result) -> str:
    """The JSON list as block YAML (as in the guide): analyses laid out as in JSON, then each record
    as ``- Kind:`` with its name and values below, statistics one ``key: value`` line each. Tensor
    records are written by the core (rust/diffai-core/src/diff/yaml.rs, no Python object per
    tensor), the others rewritten here from their JSON lines: PyYAML represents values in Python
    even with libyaml's emitter, 10 s for a 20,000-tensor diff."""
    head = dump_yaml(_analyses_json(result)) if _json_analyses(result) else ""
    return head + _yaml_records(result.record_yaml_items()) or "[]\n"


# JSON is YAML flow syntax, except that YAML 1.1 (PyYAML) reads a float without a decimal point
# (1e-05) as a string: such numbers outside strings get ".0" (1.0e-05).
_FLOAT_WITHOUT_POINT = re.compile(r'("(?:[^"\\]|\\.)*")|(?<![\d.])(-?\d+)([eE][-+]?\d+)')

@functools.lru_cache(maxsize=1)  # compiled on first use (its ranges take ~10 ms, at every start otherwise)
def _not_yaml_printable() -> "re.Pattern[str]":
    """Characters YAML does not allow raw (or reads as line breaks) inside a double-quoted scalar."""
    return re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# A name written unquoted reads back as the same string: no YAML indicator, number, bool or null.
# The core's YAML writer (rust/diffai-core/src/diff/yaml.rs) applies the same rules, and those of
# _needs_pyyaml: tests/test_yaml_core.py holds the two to the same bytes.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _yaml_flow(value: Any) -> str:
    """A JSON-safe value as one line of YAML."""
    return _yaml_flow_text(json.dumps(value, ensure_ascii=False), lambda: value)


def _needs_pyyaml(text: str) -> bool:
    return "\x7f" in text or not text.isascii() and _not_yaml_printable().search(text) is not None


def _yaml_flow_text(text: str, value: Callable[[], Any]) -> str:
    """JSON text (``ensure_ascii=False``) as one line of YAML; ``value()`` gives what it encodes."""
    if _needs_pyyaml(text):
        # Rare: PyYAML escapes what YAML would not take raw (or would read as a line break).
        return _pyyaml(value(), flow=True).removesuffix("\n...\n").rstrip("\n")
    return _points(text)


# A float written without a decimal point: floats are written as repr writes them (one digit,
# then "e", a sign and the exponent: 1e-05), so it is a digit not after a digit or a point, then
# "e" and a signed exponent. Searched from each "e" and checked behind it: a regex that starts at
# every digit took 30 times as long on a 20,000-tensor diff.
_EXPONENT_WITHOUT_POINT = re.compile(r"e[-+]\d(?<=[^\d.]\de[-+]\d)")


def _maybe_float_without_point(text: str) -> bool:
    """Whether the text may hold a float without a decimal point outside its strings (a string
    may hold such text too: ``_points`` tells them apart)."""
    return _EXPONENT_WITHOUT_POINT.search(text) is not None or text[:1].isdecimal() and text[1:3] in ("e-", "e+")


def _points(text: str) -> str:
    if _maybe_float_without_point(text):  # rare (1e-05 itself): then tell strings apart
        text = _FLOAT_WITHOUT_POINT.sub(lambda m: m[1] or f"{m[2]}.0{m[3]}", text)
    return text


# Records whose values are statistics objects and a change object or null (the core's rows).
_STATS_KINDS = {"TensorStatsChanged", "TensorShapeChanged", "TensorAdded", "TensorRemoved"}
# A string value of a member (after its key's ': '): a dtype or a layout.
_MEMBER_STRING = re.compile(r': ("[^"]*")')


def _yaml_records(lines: List[str]) -> str:
    """Records' JSON lines as YAML list items (a line that is one already, "- Kind:...", stays).
    A statistics record whose text is ASCII without a backslash (so every '"' delimits a string,
    and no string holds one) is cut after its name; what follows, objects and null, is rewritten
    as text for all such records at once."""
    heads: List[str] = []
    bodies: List[Optional[str]] = []
    plain_name, words = _PLAIN_NAME.fullmatch, _YAML_WORDS
    for line in lines:
        if line[0] == "-":  # written by the core
            heads.append(line)
            bodies.append(None)
            continue
        kind_end = line.find('"', 2)
        name_end = line.find('"', kind_end + 5)  # the name's closing quote (no backslash: no quote in it)
        kind = line[2:kind_end]
        if (kind in _STATS_KINDS and line.startswith(', {"', name_end + 1) and line.isascii()
                and "\\" not in line and "\x7f" not in line):
            name = line[kind_end + 5:name_end]  # quoted unless it reads back as itself (_unquoted)
            if not plain_name(name) or name.lower() in words:
                name = f'"{name}"'
            heads.append(f"- {kind}:\n  - {name}\n  - ")
            bodies.append(line[name_end + 4:-3] if line[-3] == "}" else line[name_end + 4:-2])
        else:
            heads.append(_yaml_record(line))
            bodies.append(None)
    rewritten = iter(_yaml_stats_values([b for b in bodies if b is not None]))
    # Each rewritten body still opens with its first key's quote.
    return "".join(h if b is None else h + next(rewritten)[1:] + "\n" for h, b in zip(heads, bodies))


def _yaml_stats_values(bodies: List[str]) -> List[str]:
    """Each ``"k": v, ...}, {...}, null`` (flat objects, then perhaps null, without the first
    object's '{' and the last one's '}'; no backslash) as the YAML ``_yaml_record`` writes for
    those items, joined by "\n  - ": one pass over all of them."""
    if not bodies:
        return []
    text = _points("\x00".join(bodies))  # NUL: never raw in JSON text, so it parts the bodies
    text = (text.replace('}, {"', "\n  - ").replace("}, null", "\n  - null")
            .replace(', "', "\n    ").replace('": ', ": "))
    for value in set(_MEMBER_STRING.findall(text)):  # a dtype or layout loses its quotes if it can
        plain = _unquoted_value(value)
        if plain != value:
            text = text.replace(": " + value, ": " + plain)
    return text.split("\x00")


# The end of the JSON value starting at an index (C scanner; the value itself is not used).
_scan_json = json.JSONDecoder().scan_once


def _yaml_record(line: str) -> str:
    """A record's JSON line (``{"Kind": [name, value, ...]}``, items joined by ", ", as
    ``Record.json_line`` and the core write it) as a YAML list item."""
    if _needs_pyyaml(line):
        return _pyyaml([json.loads(line)])
    kind_end = line.index('"', 2)
    parts, start = [], kind_end + 4  # past '": ['
    while True:
        end = _scan_json(line, start)[1]
        parts.append(line[start:end])
        if line[end] == "]":
            break
        start = end + 2
    if _maybe_float_without_point(line):
        parts = [_points(p) for p in parts]
    lines = [f"- {line[2:kind_end]}:", f"  - {_unquoted(parts[0])}"]
    for text in parts[1:]:
        lines.append("  - " + (_yaml_members(text[2:-1]) if text.startswith('{"') else text))
    return "\n".join(lines) + "\n"


def _yaml_members(body: str) -> str:
    """The members of a flat JSON object (statistics, change metrics: numbers, a dtype string, a
    shape list) as ``key: value`` lines. Its top-level separators are the only ', "' in the text
    and its keys end at the only '": ' (inside a string a quote follows a backslash)."""
    if '\\"' in body:  # a string holding a quote: its '": ' is no key
        return _MEMBER_KEY.sub(r"\1: ", body.replace(', "', "\n    "))
    body = body.replace(', "', "\n    ").replace('": ', ": ")
    start = body.find(': "')
    while start >= 0:  # a plain string value (the dtype) loses its quotes
        end = body.find('"', start + 3)
        body = body[:start + 2] + _unquoted_value(body[start + 2:end + 1]) + body[end + 1:]
        start = body.find(': "', start + 2)
    return body


_MEMBER_KEY = re.compile(r'(\w+)": ')


def _unquoted(text: str) -> str:
    """A JSON string that reads back the same without quotes (``fc1.bias``, ``f32``) loses them."""
    if text[:1] == '"' and _PLAIN_NAME.fullmatch(text, 1, len(text) - 1) and text[1:-1].lower() not in _YAML_WORDS:
        return text[1:-1]
    return text


# A member's string value is a dtype: a handful of distinct values over every record.
_unquoted_value = functools.lru_cache(maxsize=256)(_unquoted)


def dump_yaml(value: Any) -> str:
    """YAML for a JSON-safe value, laid out as ``dumps`` lays out JSON: containers of containers
    as block YAML, other values as one flow line each (their JSON)."""
    if _one_line(value):
        return _yaml_flow(value) + "\n"
    try:
        return "".join(line + "\n" for line in _yaml_block(value, ""))
    except _KeyTooLong:
        return _pyyaml(value)


class _KeyTooLong(Exception):
    """Over YAML's 1024 characters for a key written in place (PyYAML writes it another way)."""


def _yaml_block(v: Any, pad: str) -> Iterator[str]:
    if isinstance(v, dict):
        for k, x in v.items():
            key = _yaml_flow(k)
            if len(key) > 1000:
                raise _KeyTooLong
            if _one_line(x):
                yield f"{pad}{key}: {_yaml_flow(x)}"
            else:
                yield f"{pad}{key}:"
                yield from _yaml_block(x, pad + "  ")
    else:
        for x in v:
            if _one_line(x):
                yield f"{pad}- {_yaml_flow(x)}"
            else:  # "- " then the item's first line, its other lines below it
                lines = _yaml_block(x, pad + "  ")
                yield pad + "- " + next(lines)[len(pad) + 2:]
                yield from lines


def _pyyaml(value: Any, flow: bool = False) -> str:
    """Through libyaml when PyYAML has it (the pure-Python emitter is ~10x slower); libyaml cannot
    encode a name that is not valid UTF-8 (a file name's lone surrogate), PyYAML escapes it."""
    import yaml  # rare: most YAML is written here without it

    options = dict(sort_keys=False, allow_unicode=True, default_flow_style=flow, width=1 << 30 if flow else 80)
    try:
        return yaml.dump(value, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), **options)
    except UnicodeEncodeError:
        return yaml.dump(value, Dumper=yaml.SafeDumper, **options)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _brief(st: TensorStats) -> str:
    sparse = f", layout={st.layout}, nnz={st.nnz}" if st.layout else ""
    return f"shape={_shape(st.shape)}, dtype={st.dtype}, params={st.numel}{sparse}"


def _sparse_change(before: TensorStats, after: TensorStats) -> List[str]:
    """The layout and stored entries of a pair where a side is sparse (a dense side is ``strided``)."""
    if not (before.layout or after.layout):
        return []
    la, lb = before.layout or "strided", after.layout or "strided"
    parts = [f"layout={la}" if la == lb else f"layout={la}->{lb}"]
    if before.layout and after.layout:
        parts.append(f"nnz={before.nnz}" if before.nnz == after.nnz else f"nnz={before.nnz}->{after.nnz}")
    else:
        parts.append(f"nnz={before.nnz if before.layout else after.nnz}")
    return parts


def _stats_change(before: TensorStats, after: TensorStats) -> List[str]:
    parts = []
    if before.dtype != after.dtype:
        parts.append(f"dtype={before.dtype}->{after.dtype}")
    parts += _sparse_change(before, after)
    for key in ("mean", "std"):
        parts.append(f"{key}={num(getattr(before, key))}->{num(getattr(after, key))}")
    return parts


def record_line(r: Record, style: Style = plain) -> str:
    """One text line for a record: names from the file have their control characters escaped
    (values are shown by ``repr``, which escapes them too)."""
    name = escape_controls(r.name)
    if isinstance(r, TensorStatsChanged):
        parts = _stats_change(r.before, r.after)
        c = r.change
        if c is not None:
            parts += [f"max_abs_diff={num(c.max_abs_diff)}", f"rel_l2={num(c.rel_l2)}",
                      f"cosine={num(c.cosine)}", f"changed={c.changed_elements}/{r.before.numel}"]
        for key in ("nan_count", "inf_count"):
            va, vb = getattr(r.before, key), getattr(r.after, key)
            if va != vb:
                parts.append(f"{key.split('_')[0]}={va}->{vb}")
        return style(f"  ~ {name}: " + ", ".join(parts), "yellow")
    if isinstance(r, TensorShapeChanged):
        text = f"  ~ {name}: shape={_shape(r.before.shape)} -> {_shape(r.after.shape)}"
        if r.before.dtype != r.after.dtype:
            text += f", dtype={r.before.dtype}->{r.after.dtype}"
        text += "".join(f", {part}" for part in _sparse_change(r.before, r.after))
        return style(text, "yellow")
    if isinstance(r, TensorRenamed):
        return style(f"  ~ {name} -> {escape_controls(r.new_name)}: renamed, {_brief(r.stats)}", "yellow")
    if isinstance(r, TensorAdded):
        return style(f"  + {name}: {_brief(r.stats)}", "green")
    if isinstance(r, TensorRemoved):
        return style(f"  - {name}: {_brief(r.stats)}", "red")
    if isinstance(r, (ScalarChanged, MetadataChanged)):
        what = "metadata" if isinstance(r, MetadataChanged) else "value"
        if r.before is None and r.after is not None:
            return style(f"  + {name}: {what}={r.after!r}", "green")
        if r.after is None and r.before is not None:
            return style(f"  - {name}: {what}={r.before!r}", "red")
        return style(f"  ~ {name}: {what}={r.before!r}->{r.after!r}", "yellow")
    if isinstance(r, FileChanged):
        sign = "+" if r.before is None else "-" if r.after is None else "~"
        color = {"+": "green", "-": "red", "~": "yellow"}[sign]
        return style(f"  {sign} {name}: file " + {"+": "added", "-": "removed", "~": "content differs"}[sign], color)
    if isinstance(r, EntrySkipped):
        return style(f"  ! {name}: skipped in {r.side}: {escape_controls(r.reason)}", "magenta")
    raise TypeError(f"no text form for {type(r).__name__}")


def model_parameters(result) -> Tuple[int, int, int, int]:
    """Parameters of the model in a and in b, and the elements of optimizer state (role
    ``optimizer_state`` in analyses/roles.py: Adam moments, step counters, scheduler state saved
    beside the model) in a and in b, which are not parameters of the model."""
    from .analyses.common import is_optimizer_state, optimizer_flags  # analyses format their numbers with ours

    optimizer = [0, 0]
    if any(optimizer_flags(result.tensor_names())):  # most models have none: no comparison made
        optimizer = [sum(getattr(c, side).numel for c in result.comparisons
                         if getattr(c, side) is not None and is_optimizer_state(c.name)) for side in "ab"]
    s = result.summary
    return s.params_a - optimizer[0], s.params_b - optimizer[1], optimizer[0], optimizer[1]


def summary_line(result) -> str:
    """Counts of tensors by status (every tensor), then model parameters only, with the optimizer
    state left out said apart."""
    s = result.summary
    pa, pb, opt_a, opt_b = model_parameters(result)
    same = f"{s.not_compared} not compared (headers only)" if s.not_compared else f"{s.unchanged} unchanged"
    renamed = f"{s.renamed} renamed, " if s.renamed else ""
    left_out = f"; optimizer state left out: {opt_a} -> {opt_b} values" if opt_a or opt_b else ""
    return (f"tensors: {s.added} added, {s.removed} removed, {renamed}{s.reshaped} reshaped, {s.changed} changed, "
            f"{same}; parameters: {pa} -> {pb} ({pb - pa:+d}){left_out}")


def to_text(result, style: Style = plain, summary: bool = True) -> str:
    # Analyses quote tensor names; an alignment names a folder's file.
    lines = [escape_controls(a.text_line()) for a in [*result.alignments, *result.analyses]]
    for part in result.record_parts():
        if isinstance(part, Record):
            lines.append(record_line(part, style))
            continue
        block = _stats_lines(part.columns(), part.coded or part.singles or _sparse(result))
        lines.extend(block if block is not None else (record_line(r, style) for r in part.records()))
        if block and style is not plain:
            lines[-len(block):] = [style(line, "yellow") for line in block]
    lines += [record_line(r, style) for r in result.unread]
    if summary:
        lines.append(summary_line(result))
    return "\n".join(lines) + "\n"


def _sparse(result) -> bool:
    return any(src is not None and src.model.sparse for _, *pair in result.sources for src in pair)


# A stats line's text around its seven figures, whose formats `_num_spec_index` chooses per value.
_STATS_PIECES = ("  ~ %s: mean=", "->", ", std=", "->", ", max_abs_diff=", ", rel_l2=", ", cosine=",
                 ", changed=%d/%d\n")


def _stats_lines(t: Dict[str, Any], special: bool) -> Optional[List[str]]:
    """``record_line`` of every record of a pair of models, from the core's columns at once, when
    each is a ``TensorStatsChanged`` of the plain kind: same dtype, dense, every figure finite
    (NaN in a column is a missing figure, shown "n/a"), the same NaN/Inf counts on both sides,
    names without control characters. None otherwise (``special``: statistics made in Python, or
    sparse tensors): then the records are rendered one by one."""
    status = t.get("status")
    if special or status is None:
        return None
    changed = status == "changed"
    if not (changed | (status == "unchanged") | (status == "not_compared")).all():
        return None
    rows = np.flatnonzero(changed)
    names = t["name"][rows].tolist()
    floats = [t[k][rows] for k in ("mean_a", "mean_b", "std_a", "std_b", "max_abs_diff", "rel_l2", "cosine")]
    counts = [t[k][rows] for k in ("changed_elements", "numel_a")]
    if not (all(np.isfinite(x).all() for x in floats) and all((x >= 0).all() for x in counts)
            and (t["dtype_a"][rows] == t["dtype_b"][rows]).all()
            and all((t[f"{k}_a"][rows] == t[f"{k}_b"][rows]).all() for k in ("nan_count", "inf_count"))
            and "".join(names).isprintable()):
        return None
    if not names:
        return []
    # Each line's format (its figures' %-formats in place), made once per combination of them, then
    # every line written by one %-format.
    code = np.zeros(len(names), dtype=np.intp)  # the figures' format indices as digits in base 3
    for x in floats:
        code = code * len(_NUM_SPECS) + _num_spec_index(x)
    line_formats = np.empty(len(_NUM_SPECS) ** len(floats), dtype=object)
    for combination in np.flatnonzero(np.bincount(code)).tolist():
        line_formats[combination] = _line_format(combination, len(floats))
    values = zip(names, *(x.tolist() for x in floats), *(x.tolist() for x in counts))
    return ("".join(line_formats[code].tolist()) % tuple(chain.from_iterable(values)))[:-1].split("\n")


# The %-formats `num` writes a finite float with.
_NUM_SPECS = ("%.4f", "%d", "%.4g")


def _num_spec_index(x: "np.ndarray") -> "np.ndarray":
    """Which of `_NUM_SPECS` ``num`` writes each (finite) value of a float64 column with, chosen
    per value by the same rules."""
    magnitude = np.abs(x)
    whole = x == np.floor(x)
    return np.where((magnitude >= 1e-3) & (magnitude < 1e5) & ~whole, 0, np.where(whole & (magnitude < 1e12), 1, 2))


def _line_format(combination: int, figures: int) -> str:
    """A stats line's %-format with its figures' formats given by ``combination`` (their
    `_NUM_SPECS` indices as base-3 digits, the first figure's most significant)."""
    specs = []
    for _ in range(figures):
        combination, index = divmod(combination, len(_NUM_SPECS))
        specs.append(_NUM_SPECS[index])
    pieces = [piece for pair in zip(_STATS_PIECES, reversed(specs)) for piece in pair]
    return "".join(pieces) + _STATS_PIECES[-1]


def inspect_text(results, style: Style = plain) -> str:
    lines: List[str] = []
    for res in results:
        label = escape_controls(res.label)
        lines.append(style(f"{label} ({res.format}): {len(res.tensors)} tensors, {res.parameters} parameters, "
                           f"{res.nbytes} bytes", "bold"))
        for t in res.tensors:
            st = t.stats
            text = f"  {escape_controls(t.name)}: {_brief(st)}"
            if st.nan_count is not None:
                text += (f", mean={num(st.mean)}, std={num(st.std)}, min={num(st.min)}, max={num(st.max)}"
                         f", nan={st.nan_count}, inf={st.inf_count}")
            lines.append(text)
        for name, value in res.scalars.items():
            lines.append(f"  {escape_controls(name)} = {value!r}")
        for key, value in res.metadata.items():
            lines.append(f"  [metadata] {escape_controls(key)} = {value!r}")
        for name, reason in res.skipped:
            lines.append(style(f"  ! {escape_controls(name)}: skipped: {escape_controls(reason)}", "magenta"))
        lines.extend(_reading_lines(res))
    return "\n".join(lines) + "\n"


def _reading_lines(res) -> List[str]:
    lines = []
    if res.inert_classes:
        lines.append("  classes kept inert (never imported or called): "
                     + escape_controls(", ".join(res.inert_classes)))
    for name, given in res.name_collisions:
        lines.append(f"  name collision: a second {escape_controls(name)} is named {escape_controls(given)}")
    return lines


def check_text(results) -> str:
    lines = []
    for res in results:
        dtypes = ", ".join(f"{d}: {v['tensors']} tensors / {v['parameters']} params / {v['bytes']} bytes"
                           for d, v in res.dtypes().items())
        lines.append(f"OK {escape_controls(res.label)}: format={res.format}, tensors={len(res.tensors)}, "
                     f"params={res.parameters}, bytes={res.nbytes}" + (f", dtypes=[{dtypes}]" if dtypes else "")
                     + (f", scalars={len(res.scalars)}" if res.scalars else "")
                     + (f", skipped={len(res.skipped)}" if res.skipped else ""))
        lines.extend(_reading_lines(res))
    return "\n".join(lines) + "\n"


def inspect_json(results) -> List[Dict[str, Any]]:
    return json_safe([
        {
            "file": res.label,
            "format": res.format,
            "parameters": res.parameters,
            "bytes": res.nbytes,
            "dtypes": res.dtypes(),
            "tensors": [{"name": t.name, **t.stats.to_dict()} for t in res.tensors],
            "scalars": res.scalars,
            "metadata": res.metadata,
            "skipped": [{"name": n, "reason": r} for n, r in res.skipped],
            "inert_classes": res.inert_classes,
            "name_collisions": [list(c) for c in res.name_collisions],
        }
        for res in results
    ])
