"""The per-tensor table of the HTML report: one row per tensor record (changed, added, removed,
reshaped, renamed) with the metrics of its JSON record, sortable by any column and filterable by name and
kind with a few lines of inline script. Without script it is still the full table, sorted by
relative change."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from ..records import Record, TensorStats
from .format import NA, cell, data_value, name_html, pct
from .text import esc, visible

# (key, header, numeric, tooltip). The keys of the metrics are those of the JSON record.
COLUMNS: List[Tuple[str, str, bool, str]] = [
    ("name", "tensor", False, ""),
    ("status", "change", False, "changed, added, removed, reshaped or renamed; a badge marks an anomaly in b"),
    ("dtype", "dtype", False, ""),
    ("shape", "shape", False, ""),
    ("numel", "params", True, "elements (of b, or of a when removed)"),
    ("rel_l2", "rel change", True, "||b - a|| / ||a||"),
    ("cosine", "cosine", True, "cosine similarity of a and b"),
    ("max_abs_diff", "max |b-a|", True, "largest elementwise difference"),
    ("mean_abs_diff", "mean |b-a|", True, "mean elementwise difference"),
    ("changed", "changed", True, "share of elements that differ"),
    ("mean", "mean a\u2192b", True, "sorted by b"),
    ("std", "std a\u2192b", True, "sorted by b"),
    ("nonfinite", "NaN/Inf b", True, "NaN and Inf elements in b"),
]
_STATUS = {"TensorStatsChanged": "changed", "TensorAdded": "added", "TensorRemoved": "removed",
           "TensorShapeChanged": "reshaped", "TensorRenamed": "renamed"}
SORTED_BY = "rel_l2"  # the order written in the file (largest first)


def _sides(r: Record) -> Tuple[Optional[TensorStats], Optional[TensorStats]]:
    a, b = getattr(r, "before", None), getattr(r, "after", None)
    only = getattr(r, "stats", None)
    if only is not None:
        if r.kind == "TensorRenamed":  # the same tensor on both sides, under another name in b
            return only, only
        return (only, None) if r.kind == "TensorRemoved" else (None, only)
    return a, b


def tensor_records(records: List[Record]) -> List[Record]:
    return [r for r in records if any(isinstance(s, TensorStats) for s in _sides(r))]


def _shape(st: Optional[TensorStats]) -> str:
    return "n/a" if st is None else "[" + ", ".join(str(d) for d in st.shape) + "]"


def _pair_text(a: Optional[str], b: Optional[str]) -> str:
    if a is None or b is None or a == b:
        return esc(b if b is not None else a if a is not None else "n/a")
    return f"{esc(a)} \u2192 {esc(b)}"


def _metric(change: Any, key: str) -> Optional[float]:
    return getattr(change, key, None) if change is not None else None


def _num_td(value: Optional[float], shown: Optional[str] = None, title: str = "") -> str:
    title_attr = f' title="{esc(title)}"' if title else ""
    return f'<td class="num" data-v="{data_value(value)}"{title_attr}>{shown if shown is not None else cell(value)}</td>'


def _stat_td(a: Optional[TensorStats], b: Optional[TensorStats], key: str) -> str:
    va, vb = (getattr(s, key, None) if s is not None else None for s in (a, b))
    one_side = a is None or b is None or (va is None and vb is None)
    shown = cell(vb if va is None else va) if one_side else f"{cell(va)} \u2192 {cell(vb)}"
    return _num_td(vb if b is not None else va, shown)


def _row(r: Record, anomaly: Optional[str]) -> str:
    a, b = _sides(r)
    change = getattr(r, "change", None)
    status = _STATUS.get(r.kind, r.kind)
    kinds = status + (" anomaly" if anomaly else "")
    badge = f' <span class="badge tone-{"bad" if anomaly in ("high", "critical") else "warn"}">{esc(anomaly)}</span>' \
        if anomaly else ""
    numel = (b or a).numel
    changed = _metric(change, "changed_elements")
    base = a.numel if a is not None else None
    frac = changed / base if changed is not None and base else None
    nan, inf = (getattr(b, "nan_count", None), getattr(b, "inf_count", None)) if b is not None else (None, None)
    nonfinite = None if nan is None or inf is None else nan + inf
    cells = [
        f'<td class="name">{name_html(r.name)}'
        + (f" \u2192 {name_html(r.new_name)}" if r.kind == "TensorRenamed" else "") + "</td>",
        f'<td data-v="{esc(status)}">{esc(status)}{badge}</td>',
        f"<td>{_pair_text(a and a.dtype, b and b.dtype)}</td>",
        f"<td>{_pair_text(a and _shape(a), b and _shape(b))}</td>",
        _num_td(numel),
        *(_num_td(_metric(change, k)) for k in ("rel_l2", "cosine", "max_abs_diff", "mean_abs_diff")),
        _num_td(frac, pct(frac) if frac is not None else NA,
                f"{changed} of {base} elements" if frac is not None else ""),
        _stat_td(a, b, "mean"),
        _stat_td(a, b, "std"),
        _num_td(nonfinite, NA if nonfinite is None else "0" if nonfinite == 0 else f"{nan} NaN, {inf} Inf"),
    ]
    sev = f' class="sev-{esc(anomaly)}"' if anomaly else ""
    names = r.name + (" " + r.new_name if r.kind == "TensorRenamed" else "")  # the filter finds either
    return (f'<tr data-kind="{esc(kinds)}" data-name="{esc(visible(names).lower())}"{sev}>' + "".join(cells) + "</tr>")


def _order(r: Record) -> Tuple[int, float]:
    rel = _metric(getattr(r, "change", None), "rel_l2")
    if rel is None or math.isnan(rel):
        return (1, 0.0)
    return (0, -rel)


def tensor_table(records: List[Record], anomalies: Dict[str, str], table_id: str, unlisted: str) -> str:
    """``records`` are ``tensor_records``; ``anomalies`` maps a tensor name to its anomaly severity
    in b; ``unlisted`` says which tensors the table leaves out (those that do not differ)."""
    rows = sorted(records, key=_order)
    if not rows:
        return f"<p>No tensor differs ({esc(unlisted)}).</p>"
    head = "".join(
        f'<th data-key="{key}" data-type="{"num" if numeric else "text"}" title="{esc(tip)}" tabindex="0"'
        + (' aria-sort="descending"' if key == SORTED_BY else "") + f">{esc(label)}</th>"
        for key, label, numeric, tip in COLUMNS)
    kinds = sorted({_STATUS.get(r.kind, r.kind) for r in rows})
    options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in kinds)
    if any(r.name in anomalies for r in rows):
        options += '<option value="anomaly">with an anomaly</option>'
    body = "".join(_row(r, anomalies.get(r.name)) for r in rows)
    return (f'<div class="tensor-table" id="{table_id}"><div class="controls">'
            '<label>Filter by name <input type="search" class="t-filter" placeholder="part of a name"></label> '
            f'<label>Show <select class="t-kind"><option value="">all</option>{options}</select></label> '
            f'<span class="t-shown">{len(rows)} of {len(rows)} shown</span>'
            f'<span class="hint">Click a column to sort. Not listed: {esc(unlisted)}.</span></div>'
            f'<div class="scroll"><table class="tensors"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div></div>")


# Sorting (numbers by data-v, missing values last in either direction) and filtering, for every
# tensor table of the page. No name is ever parsed as HTML: rows are moved, not rebuilt.
SCRIPT = """
document.querySelectorAll('.tensor-table').forEach(function (box) {
  var table = box.querySelector('table'), body = table.tBodies[0], heads = table.tHead.rows[0].cells;
  var rows = Array.prototype.slice.call(body.rows);
  var filter = box.querySelector('.t-filter'), kind = box.querySelector('.t-kind'), shown = box.querySelector('.t-shown');
  function value(row, i, numeric) {
    var td = row.cells[i], v = td.getAttribute('data-v');
    if (!numeric) return v !== null ? v : td.textContent;
    var x = v === null || v === '' ? NaN : Number(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(i) {
    var th = heads[i], numeric = th.getAttribute('data-type') === 'num', now = th.getAttribute('aria-sort');
    var ascending = now ? now === 'descending' : !numeric;
    Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var sign = ascending ? 1 : -1;
    rows.sort(function (r1, r2) {
      var a = value(r1, i, numeric), b = value(r2, i, numeric);
      if (a === null || b === null) return (a === null) - (b === null);
      if (!numeric) return sign * a.localeCompare(b);
      return a === b ? 0 : sign * (a < b ? -1 : 1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function applyFilter() {
    var q = filter.value.toLowerCase(), k = kind.value, n = 0;
    rows.forEach(function (r) {
      var ok = r.getAttribute('data-name').indexOf(q) >= 0 && (!k || r.getAttribute('data-kind').split(' ').indexOf(k) >= 0);
      r.hidden = !ok;
      n += ok ? 1 : 0;
    });
    shown.textContent = n + ' of ' + rows.length + ' shown';
  }
  Array.prototype.forEach.call(heads, function (th, i) {
    th.addEventListener('click', function () { sortBy(i); });
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(i); } });
  });
  filter.addEventListener('input', applyFilter);
  kind.addEventListener('change', applyFilter);
});
"""
