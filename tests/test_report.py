"""Markdown and HTML reports; the HTML is opened in headless Chromium and its charts counted."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import diffai
from diffai.analyses import run_analyses
from diffai.cli import main
from conftest import FIXTURES, read_safetensors_f64

AN = FIXTURES / "analysis"
BASE, TUNED = str(AN / "base.safetensors"), str(AN / "head_finetune.safetensors")


def test_markdown_output_has_tables(capsys):
    main([BASE, TUNED, "--markdown-output", "--learning-progress", "--memory-analysis"])
    out = capsys.readouterr().out
    assert "### LearningProgress" in out and "### MemoryAnalysis" in out
    assert "| layer | rel_update |" in out
    assert "| TensorStatsChanged | ~ classifier.bias:" in out


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_is_self_contained_and_renders_charts(tmp_path):
    out = tmp_path / "report.html"
    main([BASE, TUNED, "-q", "--generate-report", str(out), "--include-charts"])
    text = out.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text

    # the histogram bars come from the Rust kernel; check them against numpy on the same bins
    a = read_safetensors_f64(AN / "base.safetensors")["classifier.bias"]
    b = read_safetensors_f64(AN / "head_finetune.safetensors")["classifier.bias"]
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    want, _ = np.histogram(a, bins=40, range=(lo, hi))
    result = diffai.diff(BASE, TUNED)
    src = result.sources[0][1]
    assert list(diffai._core.histogram(src.model, "classifier.bias", 40, lo, hi)) == list(want)

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    svgs = re.findall(r"<svg[^>]*class=\"chart\"", dom)
    assert len(svgs) >= 4  # layer bars, two histograms, similarity heatmap
    assert len(re.findall(r'<rect class="bar"', dom)) == 1  # only the classifier group changed
    assert len(re.findall(r'<rect class="hist-a"', dom)) == 2 * 40
    assert len(re.findall(r'<rect class="cell"', dom)) == 18 * 18  # 18 tensors of shape [32] on both sides
    assert "LearningProgress" in dom


def test_series_report_markdown(tmp_path):
    out = tmp_path / "series.md"
    main([str(AN / "adam_series" / "ckpt_*.pt"), "-q", "--generate-report", str(out), "--convergence-analysis"])
    text = out.read_text()
    assert "### TrajectoryAnalysis" in text and "**Checkpoint series**" in text
    assert text.count("## ") >= 3


def test_html_without_charts(tmp_path):
    result = diffai.diff(BASE, TUNED)
    run_analyses(result, ["change-summary"])
    from diffai.report import html_report

    text = html_report(result, include_charts=False)
    assert "<svg" not in text and "ChangeSummary" in text
