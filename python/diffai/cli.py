"""The ``diffai`` command.

    diffai A B [options]        compare two models (files or folders)
    diffai --check FILE         validate a file and summarise what it holds
    diffai inspect FILE         list every tensor with its statistics

    diffai C1 C2 C3 ... [options]   a checkpoint series (or a quoted glob): consecutive pairs plus
                                    trajectory analyses

Exit status, as with ``git diff``: 0 on success (differences or not), 1 with ``--exit-code``
when the inputs differ or with ``--regression-test`` / ``--alert-on-degradation`` when a check
fails, 2 on any error (one line on stderr).
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Dict, Iterator, List, Optional

import click

from . import __version__
from .analyses import REGISTRY, AnalysisConfig, failed_checks, run_analyses
from .api import diff as run_diff
from .api import inspect as run_inspect
from .diffing import GRAM_MAX_TENSORS, check_threads
from .errors import DiffaiError
from .output import (check_text, dump_yaml, dumps, escape_controls, inspect_json, inspect_text, plain, to_json,
                     to_text, to_yaml)

_COMMON = [
    click.option("--threads", type=int, default=0, show_default=True, callback=lambda _ctx, _param, n: _threads(n),
                 help="Worker threads (0: every core)."),
    click.option("--format", "fmt", type=click.Choice(["safetensors", "pytorch", "npy", "npz", "mat", "gguf"]),
                 help="Override format detection."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    click.option("--no-color", is_flag=True, help="Never colour the output."),
]


def _threads(n: int) -> int:
    """--threads checked by the API's own policy (diff.check_threads), refused as a usage error."""
    try:
        return check_threads(n)
    except DiffaiError as e:
        raise click.BadParameter(str(e)) from None


def _common(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return f


def _analysis_help(flag: str) -> str:
    name = flag.replace("-", " ")
    return f"Run {name if name.endswith('analysis') else 'the ' + name + ' analysis'} (docs/analyses.md)."


# Analysis flags, then the settings of AnalysisConfig as --option-name VALUE.
_ANALYSIS_FLAGS = [click.option(f"--{flag}", f"an_{flag.replace('-', '_')}", is_flag=True, help=_analysis_help(flag))
                   for flag in REGISTRY]


def _setting_help(f) -> str:
    if f.name == "seed":
        return f"Random seed of the analyses that sample (k-means initialisation; default {f.default})."
    if f.name == "protected_shapes":
        return "Regression test: names (regular expression) whose shape must not change."
    kind = "count" if f.type in ("int", "Optional[int]") else "threshold"
    return f"Analysis {kind} (default {f.default}; docs/analyses.md)."


def _threshold_type(f):
    """Counts are >= 1 (the seed >= 0), thresholds >= 0, the protected-shapes pattern a string."""
    if f.name == "protected_shapes":
        return str
    if f.type in ("int", "Optional[int]"):
        return click.IntRange(min=0 if f.name == "seed" else 1)
    return click.FloatRange(min=0)


_THRESHOLDS = [click.option(f"--{f.name.replace('_', '-')}", f"cfg_{f.name}", type=_threshold_type(f), default=None,
                            help=_setting_help(f))
               for f in fields(AnalysisConfig)]

_GLOB = re.compile(r"[*?\[]")
DEFAULT_REPORT = "diffai-report.html"
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npy", ".npz", ".mat")
FAILING_FLAGS = ("regression-test", "alert-on-degradation")


def _analysis_options(f):
    for opt in reversed(_ANALYSIS_FLAGS + _THRESHOLDS):
        f = opt(f)
    return f


def _natural(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _expand(inputs: List[str]) -> List[str]:
    """Quoted globs (``'ckpts/*.pt'``) expand here, in natural order (ckpt_2 before ckpt_10)."""
    out: List[str] = []
    for x in inputs:
        if not _GLOB.search(x) or os.path.exists(x):
            out.append(x)
            continue
        matches = sorted(glob.glob(x), key=_natural)
        if not matches:
            raise DiffaiError(f"{x}: no file matches this pattern")
        out.extend(matches)
    return out


def _style(no_color: bool):
    if no_color or os.environ.get("NO_COLOR") or not sys.stdout.isatty():  # https://no-color.org
        return lambda text, _color: text
    return lambda text, color: click.style(text, fg=None if color == "bold" else color, bold=color == "bold")


class _ProgressBar:
    """A tqdm bar on stderr, shown only once a run has taken ``SHOW_AFTER`` seconds and cleared
    when it ends: bytes read while tensors are compared, then the time spent in the analyses.
    Made only when shown (tqdm's own ``delay`` leaves a bar that was drawn by ``refresh()`` on
    screen at close, where the next line of output overwrote it)."""

    SHOW_AFTER = 1.0

    def __init__(self, tqdm) -> None:
        self.tqdm = tqdm
        self.start = time.monotonic()
        self.bar = None
        self.lock = threading.Lock()

    def _shown(self, **kwargs):
        if self.bar is None and time.monotonic() - self.start >= self.SHOW_AFTER:
            self.bar = self.tqdm(leave=False, file=sys.stderr, dynamic_ncols=True, **kwargs)
        return self.bar

    def __call__(self, done: int, total: int) -> None:
        """The diff's progress: ``done`` of ``total`` bytes."""
        with self.lock:
            bar = self._shown(desc="diffai", total=total, unit="B", unit_scale=True)
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

    @contextmanager
    def phase(self, desc: str) -> Iterator[None]:
        """A step without a byte count (the analyses): its elapsed time, redrawn by a thread."""
        self.close()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.25):
                with self.lock:
                    bar = self._shown(desc=desc, bar_format="{desc}: {elapsed}")
                    if bar is not None:
                        bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            self.close()

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None


@contextmanager
def _progress(quiet: bool) -> Iterator[Optional[_ProgressBar]]:
    """A progress bar, or None when quiet, piped or without tqdm."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = _ProgressBar(tqdm)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def _phase(progress: Optional[_ProgressBar], desc: str) -> Iterator[None]:
    if progress is None:
        yield
    else:
        with progress.phase(desc):
            yield


def _note(message: str) -> None:
    click.echo(f"diffai: {escape_controls(message)}", err=True)


def _fail(message: str) -> None:
    click.echo(f"diffai: error: {escape_controls(message)}", err=True)  # it may quote a name from a file
    sys.exit(2)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--check", "check", is_flag=True, help="Validate each input and summarise what it holds.")
@click.option("--output", "-o", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@click.option("--epsilon", type=float, default=0.0, help="Element differences up to this size are not changes.")
@click.option("--path", "path_filter", help="Only names containing this text.")
@click.option("--ignore-keys-regex", help="Skip names matching this regular expression.")
@click.option("--shape-only", is_flag=True, help="Read headers only: shapes and dtypes, no statistics.")
@click.option("--sort-by-change-magnitude", is_flag=True, help="Largest changes first.")
@click.option("--exit-code", is_flag=True, help="Exit with 1 when the inputs differ.")
@click.option("--stats", is_flag=True, hidden=True, help="Accepted for compatibility; statistics are always shown.")
@click.option("--no-analysis", is_flag=True, help="Tensor lines only: run no analysis.")
@click.option("--markdown-output", is_flag=True, help="Print Markdown tables instead of text.")
@click.option("--generate-report", "report_path", type=click.Path(dir_okay=False), is_flag=False,
              flag_value=DEFAULT_REPORT, metavar="[FILE]",
              help=f"Write a report to FILE ({DEFAULT_REPORT} when no name is given): self-contained HTML, "
                   "or Markdown when FILE ends in .md.")
@click.option("--include-charts", is_flag=True, help="Put SVG charts in the HTML report (with --generate-report).")
@click.option("--no-align", is_flag=True,
              help="Pair names only as they are (by default a wrapper prefix such as 'module.' or "
                   "'_orig_mod.' is stripped when that pairs more tensors).")
@click.option("--strip-prefix", metavar="A:B",
              help="Strip A from a's tensor names and B from b's before pairing (either may be empty: ':module.').")
@click.option("--stream", is_flag=True,
              help="Accepted for compatibility: files are always read streaming (memory-mapped, in chunks).")
@_analysis_options
@_common
@click.version_option(__version__, "--version", "-V")
def diff_command(inputs: List[str], check: bool, output: str, epsilon: float, path_filter: Optional[str],
                 ignore_keys_regex: Optional[str], shape_only: bool, sort_by_change_magnitude: bool,
                 exit_code: bool, stats: bool, no_analysis: bool, markdown_output: bool, report_path: Optional[str],
                 include_charts: bool, no_align: bool, strip_prefix: Optional[str], stream: bool, threads: int,
                 fmt: Optional[str], quiet: bool, no_color: bool, **analysis_options: Any) -> None:
    """Compare ML model files (safetensors, PyTorch, NumPy, MATLAB, GGUF) tensor by tensor.

    \b
      diffai A B [options]      compare two models (files or folders)
      diffai C1 C2 C3 ...       a checkpoint series (or a quoted glob)
      diffai --check FILE       validate files and summarise what they hold
      diffai inspect FILE       list every tensor with its statistics (diffai inspect --help)

    In text, every analysis that applies runs (summary lines first) unless analysis flags select
    some or --no-analysis gives tensor lines only. --output json/yaml list one record per change;
    analysis records join them only when an analysis flag is given.

    Shell completion (bash; zsh and fish alike): eval "$(_DIFFAI_COMPLETE=bash_source diffai)"."""
    if check:
        if not inputs:
            _fail("--check needs at least one file")
        with _progress(quiet) as progress:
            results = [r for x in inputs for r in run_inspect(x, threads=threads, format=fmt, progress=progress)]
        click.echo(dumps(inspect_json(results)) + "\n" if output == "json" else check_text(results), nl=False)
        return
    inputs = _expand(list(inputs))
    if len(inputs) < 2:
        _fail(f"expected two inputs to compare, got {len(inputs)} (see diffai --help)")
    selected = [flag for flag in REGISTRY if analysis_options[f"an_{flag.replace('-', '_')}"]] or None
    if no_analysis and selected:
        _fail("--no-analysis cannot be combined with analysis flags")
    config = AnalysisConfig(**{f.name: analysis_options[f"cfg_{f.name}"] for f in fields(AnalysisConfig)
                               if analysis_options[f"cfg_{f.name}"] is not None})
    if no_align and strip_prefix is not None:
        _fail("--no-align cannot be combined with --strip-prefix")
    if report_path is not None and report_path.lower().endswith(MODEL_SUFFIXES):
        _fail(f"--generate-report {report_path}: that looks like a model file; give the report an .html or .md name")
    if include_charts and report_path is None:
        _note("--include-charts puts charts in the HTML report: add --generate-report [FILE]")
    diff_args: Dict[str, Any] = dict(epsilon=epsilon, path=path_filter, ignore_keys_regex=ignore_keys_regex,
                                     shape_only=shape_only, sort_by_change_magnitude=sort_by_change_magnitude,
                                     threads=threads, format=fmt, align=not no_align, strip_prefix=strip_prefix)
    # JSON and YAML list the changes; analyses join them only when a flag asks for them (the
    # text shows every analysis that applies, and so does a report).
    machine = output in ("json", "yaml") and not markdown_output
    analyse = not no_analysis and (selected is not None or not machine or report_path is not None)
    # The similarity matrix (an analysis, or the report's heatmap) summed in the diff's pass.
    if analyse and (selected is None or "similarity-matrix" in selected or report_path is not None):
        diff_args["similarity_max_tensors"] = min(max(config.similarity_max_tensors, 0), GRAM_MAX_TENSORS)
    # Likewise the embedding analysis's per-row products.
    if analyse and (selected is None or "embedding-analysis" in selected or report_path is not None):
        diff_args["embedding_rows"] = True
    with _progress(quiet) as progress:
        if len(inputs) == 2:
            result = run_diff(inputs[0], inputs[1], progress=progress, **diff_args)
            if analyse:
                with _phase(progress, "diffai: analyses"):
                    run_analyses(result, selected, config)
        else:
            from .analyses import diff_series  # a checkpoint series

            result = diff_series(inputs, selected, config, analyse=analyse, progress=progress, **diff_args)
    series = len(inputs) > 2
    notes: Dict[str, None] = {}  # in order, once (a series' pairs share their filters)
    for pair in result.pairs if series else [result]:
        pair.analyses_in_json = selected is not None
        notes.update(dict.fromkeys(pair.notes))
        notes.update(dict.fromkeys(pair.reading_notes()))
        if machine or markdown_output:
            notes.update(dict.fromkeys(f"{r.name!r} not compared: {r.reason} (in a and b)" for r in pair.unread))
        if machine or markdown_output:  # text shows them on its first lines, JSON with the analyses
            notes.update(dict.fromkeys(a.text_line() for a in pair.alignments))
    for message in notes:
        _note(message)
    if markdown_output:  # a document: its own line breaks stay, every other control is escaped
        from .report import markdown  # imported by the runs that write one

        click.echo(escape_controls(markdown(result), keep="\n"), nl=False)
    elif output == "json":
        click.echo(dumps(result.to_json_obj()) if series else to_json(result))
    elif output == "yaml":
        if series:
            click.echo(dump_yaml(result.to_json_obj()), nl=False)
        else:
            click.echo(to_yaml(result), nl=False)
    else:
        # A series' trajectory tables quote names as they are: its text is escaped whole, uncoloured.
        text = escape_controls(result.to_text(plain), keep="\n") if series else to_text(result, _style(no_color))
        click.echo(text, nl=False)
    if report_path:
        from .report import write_report

        write_report(report_path, result, include_charts, config)
        _note(f"report written to {report_path}")
    gating = selected is not None and any(f in selected for f in FAILING_FLAGS)
    failed = failed_checks(result.analyses) if gating else []
    if failed:
        click.echo(f"diffai: {len(failed)} check(s) failed: " + "; ".join(failed), err=True)
    if failed or (exit_code and result.has_differences):
        sys.exit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--output", "-o", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@click.option("--shape-only", is_flag=True, help="Read headers only.")
@_common
def inspect_command(inputs: List[str], output: str, shape_only: bool, threads: int, fmt: Optional[str],
                    quiet: bool, no_color: bool) -> None:
    """List every tensor of a model with its statistics."""
    with _progress(quiet) as progress:
        results = [r for x in inputs
                   for r in run_inspect(x, shape_only=shape_only, threads=threads, format=fmt, progress=progress)]
    if output == "json":
        click.echo(dumps(inspect_json(results)))
    elif output == "yaml":
        click.echo(dump_yaml(inspect_json(results)), nl=False)
    else:
        click.echo(inspect_text(results, _style(no_color)), nl=False)


def _bare_report_flag(args: List[str]) -> List[str]:
    """``--generate-report`` directly before an input (a model file, a folder or a glob) is the
    bare flag, not the report's name: it must never take a model's name and overwrite it."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        nxt = out[i + 1]
        if arg == "--generate-report" and not nxt.startswith("-") and (
                nxt.lower().endswith(MODEL_SUFFIXES) or os.path.isdir(nxt) or _GLOB.search(nxt)):
            out[i] = f"--generate-report={DEFAULT_REPORT}"
    return out


def main(argv: Optional[List[str]] = None) -> None:
    args = _bare_report_flag(list(sys.argv[1:] if argv is None else argv))
    command = inspect_command if args[:1] == ["inspect"] else diff_command
    if command is inspect_command:
        args = args[1:]
    try:
        code = command.main(args=args, prog_name="diffai inspect" if command is inspect_command else "diffai",
                            standalone_mode=False)
        if isinstance(code, int):  # --help / --version return their exit code here
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message())
    except DiffaiError as e:
        _fail(str(e))
    except (KeyboardInterrupt, click.Abort):  # click reports Ctrl-C as Abort; diffai never prompts
        click.echo("diffai: interrupted", err=True)
        sys.exit(130)
    except (OSError, ValueError, MemoryError) as e:
        _fail(f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug in diffai: still one line and exit 2, never a traceback
        _fail(f"internal error ({type(e).__name__}): {e}")
