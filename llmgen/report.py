"""One self-contained static HTML report for any number of run folders.

The file must open from an e-mail attachment or a CI artefact store, so it has no server, no CDN
and no network: CSS and JS are inline and every PNG is a base64 data URI. It renders *any* run
folder generically (``results.json`` + every ``*.jsonl`` + every ``*.png``) and adds dedicated views
where the format is known: the metric table with intervals and the format-spread distributions of
the one results schema that ``llmgen eval`` (``--formats`` included) and the recipes' evaluations write.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmgen.analysis import Run, load_run
from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_text, read_jsonl

MAX_CELL_CHARS = 4000  # a sample cell longer than this is cut (the full text stays in the run folder)
_esc = html.escape


def _fmt(value: Any) -> str:
    """Numbers with 4 significant decimals; everything else as compact JSON or text."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _table(headers: list[str], rows: Iterable[list[Any]], cls: str = "", raw: bool = False) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _esc(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of nested dicts as ``("a.b.c", value)``; lists are kept whole (shown as JSON)."""
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


# ---------------------------------------------------------------- metrics with uncertainty
def _metric_table_data(results: dict) -> dict[str, dict[str, Any]] | None:
    """``results["results"]`` when it has the ``{task: {metric: value}}`` shape of ``llmgen eval``."""
    res = results.get("results")
    if isinstance(res, dict) and res and all(isinstance(v, dict) for v in res.values()):
        return res
    return None


def _uncertainty(run: Run, task: str, metric: str) -> dict | None:
    """Stderr/CI of one metric, from the ``uncertainty`` block the runner writes next to ``results``."""
    unc = (run.results.get("uncertainty") or {}).get(task, {}).get(metric)
    return unc if isinstance(unc, dict) else None


def _metrics_section(run: Run) -> str:
    data = _metric_table_data(run.results)
    if data is None:
        return ""
    rows = []
    for task, metrics in data.items():
        for metric, value in metrics.items():
            unc = _uncertainty(run, task, metric)
            n = run.results.get("n_samples", {}).get(task, "")
            if unc:
                rows.append([task, metric, value, unc.get("stderr"),
                             f"[{_fmt(unc.get('ci_low'))}, {_fmt(unc.get('ci_high'))}]", unc.get("n", n)])
            else:
                rows.append([task, metric, value, "", "", n])
    headers = ["task", "metric", "value", "stderr", "95% CI", "n"]
    return "<h3>Metrics</h3>" + _table(headers, rows, "metrics")


def _other_values_section(run: Run) -> str:
    """Every scalar in ``results.json`` that the metric table and config views do not already show."""
    skip = {"config", "format_spread"}
    if _metric_table_data(run.results) is not None:
        skip |= {"results", "uncertainty"}
    leaves = [(k, v) for k, v in _flatten({k: v for k, v in run.results.items() if k not in skip})]
    if not leaves:
        return ""
    return "<h3>Results</h3>" + _table(["key", "value"], leaves, "kv")


# ---------------------------------------------------------------- format spread
def _format_spread_data(run: Run) -> dict[str, dict]:
    """Per-format results as the runner writes them for ``--formats`` (and the FormatSpread recipe):
    ``results["format_spread"] = {task: {"formats": [{"format_id", "original", "format", "metrics"}], ...}}``."""
    fs = run.results.get("format_spread")
    return fs if isinstance(fs, dict) else {}


def _strip_svg(values: list[float], original: float | None, width: int = 560) -> str:
    """A dot histogram of per-format scores (equal scores stack), the original format in red.

    Inline SVG, no JS. The axis spans the observed range (padded), so a 2-point spread is as
    visible as a 40-point one; the axis labels give the scale.
    """
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    margin, r, base = 16, 4, 0
    stacks: dict[int, int] = {}
    dots = []
    for v in sorted(values):
        col = round((v - lo) / (hi - lo) * (width - 2 * margin) / (2 * r))
        stacks[col] = stacks.get(col, 0) + 1
        dots.append((margin + col * 2 * r, stacks[col], v))
    base = 2 * r * max(stacks.values()) + 8
    height = base + 22
    circles = "".join(f'<circle cx="{x}" cy="{base - (k - 1) * 2 * r - r}" r="{r - 0.5}" class="fmt-dot">'
                      f"<title>{v:.4g}</title></circle>" for x, k, v in dots)
    orig = ""
    if original is not None:
        x = margin + (original - lo) / (hi - lo) * (width - 2 * margin)
        orig = (f'<line x1="{x:.1f}" y1="2" x2="{x:.1f}" y2="{base}" class="fmt-orig"><title>original '
                f"{original:.4g}</title></line>")
    axis = (f'<line x1="{margin}" y1="{base + 2}" x2="{width - margin}" y2="{base + 2}" stroke="#888"/>'
            f'<text x="{margin}" y="{base + 16}" class="ax">{lo + pad:.3g}</text>'
            f'<text x="{width - margin}" y="{base + 16}" text-anchor="end" class="ax">{hi - pad:.3g}</text>')
    return f'<svg class="strip" width="{width}" height="{height}" role="img">{axis}{circles}{orig}</svg>'


def _format_spread_section(run: Run) -> str:
    data = _format_spread_data(run)
    if not data:
        return ""
    parts = ["<h3>Format spread</h3>"]
    for task, entry in data.items():
        formats = entry.get("formats") or []
        metrics = sorted({m for f in formats for m, v in (f.get("metrics") or {}).items() if isinstance(v, int | float)})
        rows = []
        for m in metrics:
            vals = [float(f["metrics"][m]) for f in formats if isinstance(f.get("metrics", {}).get(m), int | float)]
            orig = next((float(f["metrics"][m]) for f in formats if f.get("original") and m in f.get("metrics", {})), None)
            s = sorted(vals)
            median = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
            rows.append([_esc(m), _esc(_fmt(orig)), _esc(_fmt(s[0])), _esc(_fmt(median)), _esc(_fmt(s[-1])),
                         _esc(_fmt(s[-1] - s[0])), str(len(s)), _strip_svg(vals, orig)])
        counts = [f["pulls"]["examples"] for f in formats if isinstance(f.get("pulls"), dict)]
        partial = bool(counts) and min(counts) < max(counts)
        mode = entry.get("mode", "")
        note = (f"mode {_esc(str(mode))}" + ("; some formats were scored on fewer examples (bandit pulls), "
                "so their values are partial" if partial else "")) if mode or partial else ""
        parts.append(f"<h4>{_esc(task)} <span class='muted'>{note}</span></h4>")
        parts.append(_table(["metric", "original", "min", "median", "max", "spread", "formats", "distribution"],
                            rows, "spread", raw=True))
        if formats:
            fmt_rows = [[_esc(str(f.get("format_id", i))), "yes" if f.get("original") else "",
                         f'<div class="cell"><pre>{_esc(str(f.get("format", "")))}</pre></div>',
                         _esc(", ".join(f"{k}={_fmt(v)}" for k, v in (f.get("metrics") or {}).items())),
                         _esc(str((f.get("pulls") or {}).get("examples", "")))]
                        for i, f in enumerate(formats)]
            parts.append("<details><summary>formats</summary>"
                         + _table(["id", "original", "format", "metrics", "examples scored"], fmt_rows, "formats",
                                  raw=True)
                         + "</details>")
    return "".join(parts)


# ---------------------------------------------------------------- plots, config, samples
def _images_section(run: Run) -> str:
    pngs = sorted(p for p in run.path.rglob("*.png") if p.is_file())
    if not pngs:
        return ""
    figs = []
    for p in pngs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        rel = p.relative_to(run.path).as_posix()
        figs.append(f'<figure><img alt="{_esc(rel)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_esc(rel)}</figcaption></figure>")
    return "<h3>Plots</h3>" + '<div class="figs">' + "".join(figs) + "</div>"


def _config_section(run: Run) -> str:
    cfg = run.config
    meta = {k: run.results[k] for k in ("model", "backend", "seed", "versions", "timings") if k in run.results}
    if not cfg and not meta:
        return ""
    body = ""
    if meta:
        body += _table(["key", "value"], _flatten(meta), "kv")
    if cfg:
        body += f"<pre>{_esc(json.dumps(cfg, indent=2, ensure_ascii=False, default=str))}</pre>"
    return f"<details><summary>Configuration</summary>{body}</details>"


def _cell(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    text = value if isinstance(value, str) else _fmt(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + f" … [{len(text) - MAX_CELL_CHARS} more characters]"
    return f'<div class="cell">{_esc(text)}</div>'


def _samples_section(run: Run, max_rows: int, table_id: str) -> str:
    parts = []
    for i, path in enumerate(sorted(p for p in run.path.rglob("*.jsonl") if p.is_file())):
        try:
            rows = read_jsonl(path, allow_empty=True)
        except LlmgenError as e:
            parts.append(f"<p class='warn'>{_esc(str(e))}</p>")
            continue
        shown = rows[:max_rows]
        flat = [dict(_flatten(r)) for r in shown]
        cols: list[str] = []
        for r in flat:
            cols += [k for k in r if k not in cols]
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in flat)
        note = f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
        tid = f"{table_id}-{i}"
        rel = path.relative_to(run.path).as_posix()
        parts.append(
            f'<h4>{_esc(rel)} <span class="muted">{len(rows)} rows{note}</span></h4>'
            f'<input class="filter" type="search" placeholder="filter rows…" data-table="{tid}">'
            f' <span class="count" id="{tid}-count"></span>'
            f'<div class="scroll"><table class="samples" id="{tid}"><thead><tr>'
            + "".join(f"<th>{_esc(c)}</th>" for c in cols) + f"</tr></thead><tbody>{body}</tbody></table></div>")
    return ("<h3>Samples</h3>" + "".join(parts)) if parts else ""


def _overview(runs: list[Run]) -> str:
    """Runs side by side: one row per (task, metric), one column per run."""
    runs = [r for r in runs if _metric_table_data(r.results)]
    keys: list[tuple[str, str]] = []
    for r in runs:
        data = _metric_table_data(r.results) or {}
        keys += [(t, m) for t, ms in data.items() for m in ms if (t, m) not in keys]
    if len(runs) < 2 or not keys:
        return ""
    rows = []
    for t, m in keys:
        cells = []
        for r in runs:
            cells.append((_metric_table_data(r.results) or {}).get(t, {}).get(m, ""))
        rows.append([t, m, *cells])
    return "<h2>Overview</h2>" + _table(["task", "metric", *[r.name for r in runs]], rows, "metrics")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-top:.6em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0}table.metrics td:nth-child(n+3){font-variant-numeric:tabular-nums}
.cell{max-height:9em;max-width:40em;overflow:auto;white-space:pre-wrap;word-break:break-word}
.scroll{max-height:36em;overflow:auto;border:1px solid #eee}
pre{background:#f8f8f8;padding:.6em;overflow:auto;max-height:30em}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;border:1px solid #eee;padding:.4em}
figure img{max-width:640px;height:auto;display:block}figcaption{color:#555;font-size:.9em}
.muted,.count{color:#777;font-weight:normal;font-size:.9em}.warn{color:#b00}
input.filter{padding:3px 6px;width:24em}svg.strip .fmt-dot{fill:#3b82f6;opacity:.6}
svg.strip .fmt-orig{stroke:#dc2626;stroke-width:2}svg.strip .ax{font-size:10px;fill:#555}
nav a{margin-right:1em}#llmgen-status{color:#777;font-size:.85em}
"""

# The JS filters sample tables, applies a ``#q=text`` filter from the URL (shareable links) and
# writes a status element with error and broken-image counts that the browser test reads.
_JS = """
(function(){
  var errors = 0;
  window.addEventListener('error', function(){ errors += 1; update(); });
  function filter(input){
    var q = input.value.toLowerCase(), table = document.getElementById(input.dataset.table);
    var rows = table.tBodies[0].rows, shown = 0;
    for (var i = 0; i < rows.length; i++){
      var hit = !q || rows[i].textContent.toLowerCase().indexOf(q) !== -1;
      rows[i].style.display = hit ? '' : 'none'; if (hit) shown++;
    }
    document.getElementById(input.dataset.table + '-count').textContent = shown + ' of ' + rows.length + ' rows';
  }
  function update(){
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++){ if (imgs[i].complete && imgs[i].naturalWidth === 0) broken++; }
    var s = document.getElementById('llmgen-status');
    s.dataset.jsErrors = errors; s.dataset.images = imgs.length; s.dataset.brokenImages = broken;
    s.dataset.tables = document.querySelectorAll('table').length; s.dataset.ready = '1';
    s.textContent = 'interactive · ' + imgs.length + ' images (' + broken + ' broken) · ' + errors + ' script errors';
  }
  var inputs = document.querySelectorAll('input.filter');
  var m = /[#&]q=([^&]*)/.exec(location.hash);
  for (var i = 0; i < inputs.length; i++){
    inputs[i].addEventListener('input', function(e){ filter(e.target); });
    if (m) inputs[i].value = decodeURIComponent(m[1]);
    filter(inputs[i]);
  }
  update();
  window.addEventListener('load', update);
})();
"""


def build_report(paths: list[str | Path], max_samples: int = 1000, title: str = "llmgen report") -> str:
    """The HTML text of a report on ``paths`` (run folders, in the order given)."""
    if not paths:
        raise LlmgenError("report needs at least one run folder")
    if max_samples < 0:
        raise LlmgenError(f"--max-samples must be >= 0, got {max_samples}")
    runs = [load_run(p) for p in paths]
    nav = "".join(f'<a href="#run-{i}">{_esc(r.name)}</a>' for i, r in enumerate(runs))
    sections = []
    for i, r in enumerate(runs):
        sections.append(
            f'<section id="run-{i}"><h2>{_esc(r.name)} <span class="muted">{_esc(str(r.path))}</span></h2>'
            + _config_section(r) + _metrics_section(r) + _format_spread_section(r) + _other_values_section(r)
            + _images_section(r) + _samples_section(r, max_samples, f"samples-{i}") + "</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><nav>{nav}</nav><div id='llmgen-status'>static view (scripts not run)</div>"
            + _overview(runs) + "".join(sections) + f"<script>{_JS}</script></body></html>")


def write_report(paths: list[str | Path], output: str | Path, max_samples: int = 1000,
                 title: str = "llmgen report") -> Path:
    """Build the report (checking every run first) and write it atomically to ``output``."""
    text = build_report(paths, max_samples=max_samples, title=title)
    return atomic_write_text(output, text)  # shared-readable mode, like every result file
