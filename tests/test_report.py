"""Markdown and HTML reports. The HTML is parsed for its structure (verdicts first, contents,
per-tensor table against the JSON records, heatmap labels, escaping of hostile names), and opened
in headless Chromium, where a script clicks the table's columns and types in its filter."""

from __future__ import annotations

import json
import math
import os
import html
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import diffai
from diffai.analyses import run_analyses
from diffai.cli import main
from diffai.report import html_report
from diffai.report.format import number
from conftest import FIXTURES, read_safetensors_f64

AN = FIXTURES / "analysis"
EXAMPLES = Path(__file__).parent.parent / "examples"
BASE, TUNED = str(AN / "base.safetensors"), str(AN / "head_finetune.safetensors")
TENSOR_RECORDS = {"TensorStatsChanged", "TensorAdded", "TensorRemoved", "TensorShapeChanged"}
METRICS = ("rel_l2", "cosine", "max_abs_diff", "mean_abs_diff")


def test_markdown_output_has_tables(capsys):
    main([BASE, TUNED, "--markdown-output", "--learning-progress", "--memory-analysis"])
    out = capsys.readouterr().out
    assert "### LearningProgress" in out and "### MemoryAnalysis" in out
    assert "| layer | rel_update |" in out
    assert "| TensorStatsChanged | ~ classifier.bias:" in out


def test_series_report_markdown(tmp_path):
    out = tmp_path / "series.md"
    main([str(AN / "adam_series" / "ckpt_*.pt"), "-q", "--generate-report", str(out), "--convergence-analysis"])
    text = out.read_text()
    assert "### TrajectoryAnalysis" in text and "**Checkpoint series**" in text
    assert text.count("## ") >= 3


# --- parsing the HTML -------------------------------------------------------------------------

class _Tree(HTMLParser):
    """Just enough of the page: the order of top-level blocks, the tensor table's rows (each cell's
    data-v and text), the TOC's links, and the ids of the sections."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: List[str] = []
        self.toc: List[str] = []
        self.ids: List[str] = []
        self.header: List[Dict[str, str]] = []
        self.rows: List[Dict] = []
        self._depth = 0
        self._in_toc = self._in_tensors = self._in_tbody = self._in_thead = False
        self._cell: Optional[Dict] = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("header", "nav", "section"):
            if self._depth == 0:
                self.blocks.append(f"{tag}#{a.get('id', '')}" if tag != "nav" else "nav")
            self._depth += 1
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "nav":
            self._in_toc = True
        if tag == "a" and self._in_toc:
            self.toc.append(a["href"])
        if tag == "table" and "tensors" in (a.get("class") or "").split():
            self._in_tensors = True
        if tag == "thead" and self._in_tensors:
            self._in_thead = True
        if tag == "th" and self._in_thead:
            self.header.append(a)
        if tag == "tbody" and self._in_tensors:
            self._in_tbody = True
        if tag == "tr" and self._in_tbody:
            self.rows.append({"attrs": a, "cells": []})
        if tag == "td" and self._in_tbody:
            self._cell = {"v": a.get("data-v"), "text": ""}
            self.rows[-1]["cells"].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_toc = False
        if tag in ("header", "nav", "section"):
            self._depth -= 1
        if tag == "thead":
            self._in_thead = False
        if tag == "tbody" and self._in_tbody:
            self._in_tbody = self._in_tensors = False
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _parse(text: str) -> _Tree:
    tree = _Tree()
    tree.feed(text)
    return tree


def _report(tmp_path: Path, a, b, *flags: str) -> str:
    out = tmp_path / "report.html"
    main([str(a), str(b), "-q", "--generate-report", str(out), *flags])
    return out.read_text(encoding="utf-8")


def _json_tensor_records(a, b) -> Dict[str, List]:
    """name -> [kind, *values] from the JSON records of the same diff."""
    out = {}
    for rec in diffai.diff(str(a), str(b)).to_json_list():
        (kind, values), = rec.items()
        if kind in TENSOR_RECORDS:
            out[values[0]] = [kind, *values[1:]]
    return out


def _num(v: Optional[str]) -> Optional[float]:
    return None if v in (None, "") else float(v)


# --- structure --------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", [
    (EXAMPLES / "base.safetensors", EXAMPLES / "finetuned.safetensors"),
    (EXAMPLES / "base.safetensors", EXAMPLES / "wider.safetensors"),
    (AN / "base.safetensors", AN / "nan_injected.safetensors"),
])
def test_verdicts_first_then_contents_then_sections(tmp_path, pair):
    text = _report(tmp_path, *pair, "--include-charts")
    tree = _parse(text)
    assert tree.blocks[0] == "header#verdicts" and tree.blocks[1] == "nav"
    assert all(b.startswith("section#") for b in tree.blocks[2:]) and len(tree.blocks) > 4
    # every contents link points at a section of the page
    assert tree.toc and all(href.lstrip("#") in tree.ids for href in tree.toc)
    first = text[: text.index("<nav")]
    result = diffai.diff(str(pair[0]), str(pair[1]))
    run_analyses(result)
    found = {a.name: a for a in result.analyses}
    for title, name, key in (("Risk", "RiskAssessment", "risk"), ("Deployment readiness", "DeploymentReadiness", "verdict"),
                             ("Anomalies", "AnomalyDetection", "severity")):
        value = found[name].summary[key]
        card = re.search(rf'<div class="card tone-(\w+)"><div class="card-title">{title}</div>'
                         rf'<div class="card-value">([^<]*)</div>', first)
        assert card and card[2] == value, title
        assert card[1] == {"low": "good", "ready": "good", "none": "good", "medium": "warn", "review": "warn",
                           "high": "bad", "critical": "bad", "blocked": "bad"}[value]
        for reason in found[name].details.get("reasons", []):  # every reason is listed, none dropped
            assert f"<li>{html.escape(reason)}</li>" in first
    assert found["ReviewFriendly"].summary["summary"] in unescape(first)


def test_nan_injected_card_and_row(tmp_path):
    text = _report(tmp_path, AN / "base.safetensors", AN / "nan_injected.safetensors")
    first = text[: text.index("<nav")]
    assert '<div class="card tone-bad"><div class="card-title">Anomalies</div><div class="card-value">critical</div>' in first
    b = read_safetensors_f64(AN / "nan_injected.safetensors")
    bad = [n for n, v in b.items() if np.isnan(v).any()]
    rows = {unescape(r["cells"][0]["text"]): r for r in _parse(text).rows}
    for name in bad:
        row = rows[name]
        assert "anomaly" in row["attrs"]["data-kind"].split() and row["attrs"]["class"] == "sev-critical"
        assert _num(row["cells"][-1]["v"]) == int(np.isnan(b[name]).sum()) + int(np.isinf(b[name]).sum())


@pytest.mark.parametrize("pair", [
    (EXAMPLES / "base.safetensors", EXAMPLES / "finetuned.safetensors"),
    (EXAMPLES / "base.safetensors", EXAMPLES / "wider.safetensors"),
    (AN / "base.safetensors", AN / "nan_injected.safetensors"),
])
def test_tensor_table_has_every_record_with_its_json_values(tmp_path, pair):
    tree = _parse(_report(tmp_path, *pair))
    keys = [h["data-key"] for h in tree.header]
    want = _json_tensor_records(*pair)
    rows = {r["cells"][0]["text"]: r for r in tree.rows}
    assert len(tree.rows) == len(want) > 0 and set(rows) == set(want)
    for name, (kind, *values) in want.items():
        cells = dict(zip(keys, rows[name]["cells"]))
        assert cells["status"]["v"] == {"TensorStatsChanged": "changed", "TensorAdded": "added",
                                        "TensorRemoved": "removed", "TensorShapeChanged": "reshaped"}[kind]
        before, after = (None, values[0]) if kind == "TensorAdded" else (values[0], None) if kind == "TensorRemoved" \
            else (values[0], values[1])
        change = values[2] if kind == "TensorStatsChanged" else None
        side = after or before
        assert _num(cells["numel"]["v"]) == side["numel"]
        for key in METRICS:
            got, expected = _num(cells[key]["v"]), (change or {}).get(key)
            if isinstance(expected, str):  # JSON writes non-finite numbers as strings
                expected = float(expected)
            assert (got is None and expected is None) or got == expected or (math.isnan(got) and math.isnan(expected)), key
        if change:
            assert _num(cells["changed"]["v"]) == change["changed_elements"] / before["numel"]
        for key in ("mean", "std"):
            assert _num(cells[key]["v"]) == side[key]
    # the file is written sorted by relative change, largest first, missing values last
    rel = [_num(dict(zip(keys, r["cells"]))["rel_l2"]["v"]) for r in tree.rows]
    known = [x for x in rel if x is not None]
    assert known == sorted(known, reverse=True) and rel[: len(known)] == known


def test_table_values_match_numpy(tmp_path):
    """Independent check of the numbers the table shows: float64 numpy on the example weights."""
    a = read_safetensors_f64(EXAMPLES / "base.safetensors")
    b = read_safetensors_f64(EXAMPLES / "finetuned.safetensors")
    tree = _parse(_report(tmp_path, EXAMPLES / "base.safetensors", EXAMPLES / "finetuned.safetensors"))
    keys = [h["data-key"] for h in tree.header]
    for row in tree.rows:
        cells = dict(zip(keys, row["cells"]))
        name = cells["name"]["text"]
        d = b[name] - a[name]
        assert _num(cells["rel_l2"]["v"]) == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a[name]), rel=1e-12)
        assert _num(cells["max_abs_diff"]["v"]) == pytest.approx(np.abs(d).max(), rel=1e-12)
        assert cells["rel_l2"]["text"] == number(_num(cells["rel_l2"]["v"]))  # one number format


def test_heatmap_and_layer_chart_are_labelled(tmp_path):
    text = _report(tmp_path, EXAMPLES / "base.safetensors", EXAMPLES / "finetuned.safetensors", "--include-charts")
    result = diffai.diff(str(EXAMPLES / "base.safetensors"), str(EXAMPLES / "finetuned.safetensors"))
    found = {a.name: a for a in run_analyses(result, ["similarity-matrix", "show-layer-impact"])}
    names = found["SimilarityMatrix"].details["matrix"]["tensors"]
    heat = text[text.index('id="similarity"'):]
    heat = heat[: heat.index("</svg>")]
    rows = re.findall(r'<text class="label row"[^>]*>([^<]*)<title>', heat)
    cols = re.findall(r'<text class="label col"[^>]*>([^<]*)<title>', heat)
    assert rows == names and cols == names  # both axes, every name (short names are not cut)
    assert ">a \u2193<" in heat and ">b \u2192<" in heat  # axis titles
    assert len(re.findall(r'<rect class="cell"', heat)) == len(names) ** 2
    # the per-layer chart: sorted by the value drawn, largest first
    layers = text[text.index('id="layers"'):]
    layers = layers[: layers.index("</svg>")]
    drawn = [float(v) for v in re.findall(r'<text x="[\d.]+" y="\d+" class="value">([^<]+)</text>', layers)]
    groups = [g for g in found["LayerImpact"].details["layers"] if g["update_norm"] > 0]
    assert drawn == sorted(drawn, reverse=True) and len(drawn) == len(groups)
    assert drawn == sorted(float(number(g["rel_update"])) for g in groups)[::-1]


def test_histograms_count_with_the_rust_kernel(tmp_path):
    text = _report(tmp_path, BASE, TUNED, "--include-charts")
    a = read_safetensors_f64(AN / "base.safetensors")["classifier.bias"]
    b = read_safetensors_f64(AN / "head_finetune.safetensors")["classifier.bias"]
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    want, _ = np.histogram(a, bins=40, range=(lo, hi))
    result = diffai.diff(BASE, TUNED)
    src = result.sources[0][1]
    assert list(diffai._core.histogram(src.model, "classifier.bias", 40, lo, hi)) == list(want)
    chart = text[text.index("<figcaption>classifier.bias"):]
    chart = chart[: chart.index("</svg>")]
    assert [int(c) for c in re.findall(r'<rect class="hist-a"[^>]*><title>(\d+)</title>', chart)] == list(want)


def test_self_contained(tmp_path):
    text = _report(tmp_path, EXAMPLES / "base.safetensors", EXAMPLES / "wider.safetensors", "--include-charts")
    assert text.count("<script") == 1  # the table's own, inline
    assert not re.search(r"<script[^>]+src|<link|@import|url\((?!#)", text)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)


def test_html_without_charts():
    result = diffai.diff(BASE, TUNED)
    run_analyses(result, ["change-summary"])
    text = html_report(result, include_charts=False)
    assert "<svg" not in text and "ChangeSummary" in text
    # the first-screen verdicts are there although the run did not ask for them
    assert '<div class="card-title">Risk</div>' in text and result.analyses[0].name == "ChangeSummary"


# --- hostile names ----------------------------------------------------------------------------

EVIL = 'enc.<script>alert("x")</script>\x1b[31mred\x07\r\nfake line\u202e.weight'
EVIL_ADDED = "new.<b>bold</b>\x00"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _evil_pair(folder: Path, a_name: str = "a.safetensors"):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    a = {EVIL: rng.standard_normal((4, 8)).astype(np.float32), "plain.weight": np.ones((4, 8), np.float32)}
    b = {EVIL: a[EVIL] * 1.5, "plain.weight": a["plain.weight"], EVIL_ADDED: rng.standard_normal(3).astype(np.float32)}
    pa, pb = os.path.join(os.fsencode(folder), os.fsencode(a_name)), folder / "b.safetensors"
    save_file(a, os.fsdecode(pa))
    save_file(b, str(pb))
    return os.fsdecode(pa), str(pb)


def test_names_are_escaped(tmp_path):
    a, b = _evil_pair(tmp_path)
    text = _report(tmp_path, a, b, "--include-charts")
    assert text.count("<script") == 1 and "<b>bold" not in text
    assert not RAW_CONTROL.search(text)
    shown = 'enc.&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\x1b[31mred\\x07\\x0d\\x0afake line\\u202e.weight'
    assert shown in text and "new.&lt;b&gt;bold&lt;/b&gt;\\x00" in text
    rows = _parse(text).rows
    assert sorted(unescape(r["cells"][0]["text"]) for r in rows) == sorted(
        [shown.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'), "new.<b>bold</b>\\x00"])
    md = tmp_path / "report.md"
    main([a, b, "-q", "--generate-report", str(md)])
    assert not RAW_CONTROL.search(md.read_text(encoding="utf-8"))


def test_file_name_not_utf8(tmp_path):
    if os.fsencode("\udcff") != b"\xff":
        pytest.skip("the file system encoding does not map undecodable bytes to surrogates")
    a, b = _evil_pair(tmp_path, a_name="\udcff.safetensors")
    text = _report(tmp_path, a, b)
    assert "\\udcff.safetensors" in text and not RAW_CONTROL.search(text)


# --- in a browser -----------------------------------------------------------------------------

def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<script>
(function () {
  var out = {}, box = document.querySelector('.tensor-table');
  var names = function () {
    return Array.prototype.filter.call(box.querySelectorAll('tbody tr'), function (r) { return !r.hidden; })
      .map(function (r) { return r.cells[0].textContent; });
  };
  out.initial = names();
  var th = box.querySelector('th[data-key="cosine"]');
  th.click(); out.cosine_first = names(); out.sort_first = th.getAttribute('aria-sort');
  th.click(); out.cosine_second = names(); out.sort_second = th.getAttribute('aria-sort');
  box.querySelector('th[data-key="name"]').click(); out.by_name = names();
  var filter = box.querySelector('.t-filter');
  filter.value = 'FC1'; filter.dispatchEvent(new Event('input')); out.filtered = names();
  out.shown = box.querySelector('.t-shown').textContent;
  filter.value = ''; filter.dispatchEvent(new Event('input'));
  var kind = box.querySelector('.t-kind'); kind.value = 'reshaped'; kind.dispatchEvent(new Event('change'));
  out.reshaped = names();
  // the verdicts fit the first screen, and no chart text sticks out of its chart
  out.cards_bottom = document.querySelector('.cards').getBoundingClientRect().bottom;
  out.viewport = window.innerHeight;
  out.clipped = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    svg.querySelectorAll('text').forEach(function (t) {
      var r = t.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
        out.clipped.push(t.textContent);
    });
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def test_renders_sorts_and_filters_in_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    pair = (EXAMPLES / "base.safetensors", EXAMPLES / "wider.safetensors")
    page = tmp_path / "probe.html"
    page.write_text(_report(tmp_path, *pair, "--include-charts").replace("</body>", PROBE), encoding="utf-8")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    probe = json.loads(unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)[1]))
    want = _json_tensor_records(*pair)
    cosine = {n: (v[3] or {}).get("cosine") if v[0] == "TensorStatsChanged" else None for n, v in want.items()}
    initial = probe["initial"]
    assert sorted(initial) == sorted(want)
    known = [n for n in initial if cosine[n] is not None]
    missing = [n for n in initial if cosine[n] is None]
    assert probe["sort_first"] == "descending" and probe["sort_second"] == "ascending"
    assert probe["cosine_first"] == sorted(known, key=lambda n: -cosine[n]) + missing  # missing last both ways
    assert probe["cosine_second"] == sorted(known, key=lambda n: cosine[n]) + missing
    assert probe["by_name"] == sorted(initial)
    assert probe["filtered"] == [n for n in probe["by_name"] if "fc1" in n] and len(probe["filtered"]) == 2
    assert probe["shown"] == f"2 of {len(want)} shown"
    assert sorted(probe["reshaped"]) == sorted(n for n, v in want.items() if v[0] == "TensorShapeChanged")
    assert probe["cards_bottom"] <= probe["viewport"]
    assert probe["clipped"] == []


def test_missing_fields_show_na():
    """Analyses change: a verdict field that is missing shows n/a, it does not break the report."""
    result = diffai.diff(str(EXAMPLES / "base.safetensors"), str(EXAMPLES / "wider.safetensors"))
    run_analyses(result)
    for a in result.analyses:
        a.summary, a.details = {}, {"anomalies": [{"issues": None}, "not a dict"]}
    text = html_report(result)
    for title in ("Risk", "Deployment readiness", "Anomalies"):
        assert (f'<div class="card tone-na"><div class="card-title">{title}</div><div class="card-value">n/a</div>'
                in text)
    assert "Review summary: n/a" in text


def test_shape_only_report(tmp_path):
    text = _report(tmp_path, EXAMPLES / "base.safetensors", EXAMPLES / "wider.safetensors", "--shape-only",
                   "--include-charts")
    first = text[: text.index("<nav")]
    assert "n/a: " in first and "<svg" not in text
    rows = _parse(text).rows
    assert len(rows) == len([r for r in diffai.diff(str(EXAMPLES / "base.safetensors"), str(EXAMPLES / "wider.safetensors"),
                                                     shape_only=True).records if r.kind in TENSOR_RECORDS])


def test_number_format():
    """One format for every number of the page: the text output's, a whole float keeping its decimals."""
    assert [number(x) for x in (0.98876, 1.0, 0.0, 12, -1.9e-05, 123456.0, None)] == \
        ["0.9888", "1.0000", "0", "12", "-1.9e-05", "123456", "n/a"]


def test_series_html(tmp_path):
    out = tmp_path / "series.html"
    main([str(AN / "adam_series" / "ckpt_*.pt"), "-q", "--generate-report", str(out), "--include-charts"])
    text = out.read_text(encoding="utf-8")
    tree = _parse(text)
    assert tree.blocks[:3] == ["header#verdicts", "nav", "section#trajectory"]
    assert [b for b in tree.blocks if b.endswith("-pair")] == ["section#p1-pair", "section#p2-pair", "section#p3-pair"]
    assert all(href.lstrip("#") in tree.ids for href in tree.toc)
    series = diffai.analyses.diff_series(sorted(str(p) for p in (AN / "adam_series").glob("ckpt_*.pt")), None, None)
    # one tensor table per pair, each with every tensor record of its pair
    assert len(tree.rows) == sum(len([r for r in p.records if r.kind in TENSOR_RECORDS]) for p in series.pairs)
    assert text.count('class="tensor-table"') == 3
    # the scalars that changed (epoch, lr, ...) are listed under each pair
    checked = 0
    for i, p in enumerate(series.pairs, 1):
        scalars = [r for r in p.records if r.kind == "ScalarChanged"]
        if scalars:
            assert f'id="p{i}-other"' in text and diffai.output.record_line(scalars[0]).strip() in unescape(text)
            checked += 1
    assert checked


# --- what the first screen says about reading, renames, tensors that start at zero -------------

def _first_screen(text: str) -> str:
    return text[: text.index("<nav")]


def test_first_screen_says_how_names_were_read():
    """The alignment line, the reading notes (a colliding name kept apart) and an entry neither file
    lets diffai read, each as text and stderr say it, above the verdict cards; a rename is one row."""
    rng = np.random.default_rng(3)
    x, y, z = (rng.standard_normal((4, 4)).astype(np.float32) for _ in range(3))
    a = {"enc.w": x, "head.w": y, "old.w": z, "a.b": x[0], "a": {"b": y[0]}}
    b = {"module.enc.w": x + 0.5, "module.head.w": y, "module.new.w": z}
    result = diffai.diff(a, b)
    run_analyses(result)
    text = html_report(result)
    first = _first_screen(text)
    notes = re.search(r'<ul class="how-read"[^>]*>(.*?)</ul>', first)
    assert notes and first.index('class="how-read"') < first.index('class="cards"')
    assert [unescape(li) for li in re.findall(r"<li>(.*?)</li>", notes[1])] == [
        "aligned: 'module.' stripped from b (2 tensors paired)", "a: 1 colliding name(s) kept apart: a.b -> a.b#2"]
    assert "<li><b>1</b> renamed</li>" in first
    assert "<li><b>1 renamed:</b> old.w \u2192 module.new.w</li>" in first
    renamed = [r for r in _parse(text).rows if r["cells"][1]["text"] == "renamed"]
    assert [unescape(r["cells"][0]["text"]) for r in renamed] == ["old.w \u2192 module.new.w"]
    # the Markdown report opens with the same lines
    assert "\n- aligned: 'module.' stripped from b (2 tensors paired)\n" in diffai.report.markdown(result)

    mat = FIXTURES / "matlab" / "v5.mat"  # holds a cell array diffai does not read, in both files
    same = diffai.diff(mat, mat)
    run_analyses(same)
    assert "<li>1 entry unreadable in both files (not compared, not counted as changes): cellv: cell array (1x2) " \
           "is not read</li>" in _first_screen(html_report(same))


def test_histograms_include_a_tensor_that_was_all_zero_in_a(tmp_path):
    """A bias all zero in a has no relative change; it moved, so it is drawn first, titled with its
    absolute update ||b - a|| (numpy float64), not left out."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    a = {f"l{i}.weight": rng.standard_normal((16, 16)).astype(np.float32) for i in range(4)}
    a["pooler.bias"] = np.zeros(16, np.float32)
    b = {k: v + rng.normal(0, 0.01, v.shape).astype(np.float32) for k, v in a.items()}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    text = _report(tmp_path, tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--include-charts")
    titles = [unescape(t) for t in re.findall(r"<figcaption>([^<]*)</figcaption>", text)]
    titles = [t for t in titles if re.match(r"\S+: (rel change|all zero in a)", t)]  # the histograms'
    norm = np.linalg.norm(b["pooler.bias"].astype(np.float64))
    assert titles[0] == f"pooler.bias: all zero in a, moved by ||\u0394|| = {number(norm)}"
    assert len(titles) == 3 and all(t.split(":")[0].startswith("l") for t in titles[1:])


def test_markdown_escapes_control_characters_but_keeps_its_lines(tmp_path):
    from safetensors.numpy import save_file

    name = "enc\x1b]0;owned\x07.weight"
    save_file({name: np.ones((2, 2), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({name: np.full((2, 2), 2, np.float32)}, str(tmp_path / "b.safetensors"))
    out = tmp_path / "x.md"
    main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "-q", "--generate-report", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text
    assert "enc\\x1b]0;owned\\x07.weight" in text and text.count("\n") > 20
    md = diffai.report.markdown(diffai.diff(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")))
    assert "\x1b" not in md and "enc\\x1b]0;owned\\x07.weight" in md and "\n| TensorStatsChanged | ~ enc\\x1b" in md
