"""``llmgen compare`` and ``llmgen report``: statistics across runs and a static HTML report.

Logic lives in ``llmgen.analysis`` and ``llmgen.report``; this module only parses options and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.display import print_table


def _pct(x: float) -> str:
    return f"{x:.4g}"


def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders; the first is the baseline."),
    task: str = typer.Option(None, "--task", help="Task to compare (needed when runs share several)."),
    metric: list[str] = typer.Option(None, "--metric", help="Metric(s) to compare (default: all shared)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resampling."),
    resamples: int = typer.Option(10_000, help="Bootstrap resamples."),
    confidence: float = typer.Option(0.95, help="Confidence level of the intervals."),
    show_flips: int = typer.Option(10, "--show-flips", help="Flipped examples to print per pair (0: none)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the comparison to this JSON file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --json file (never one of the runs)"),
) -> None:
    """Compare runs of one task on the same examples: paired bootstrap, McNemar, flipped examples.

    Two ``--formats`` runs of the same task and formats are also compared format by format: the
    paired difference with its interval per format, in how many formats each run is significantly
    better, and in how many format pairs the ranking of the two runs flips.
    """
    from rich.console import Console
    from rich.table import Table

    from llmgen.analysis import compare_formats, compare_runs, has_formats
    from llmgen.errors import LlmgenError
    from llmgen.io import atomic_write_json, check_output_file

    if resamples < 1:
        raise LlmgenError(f"--resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise LlmgenError(f"--confidence must be between 0 and 1, got {confidence}")
    if json_out is not None:
        check_output_file(json_out, overwrite=overwrite, inputs=runs)
    cmp = compare_runs(list(runs), task=task, metrics=metric or None, seed=seed, n_resamples=resamples,
                       confidence=confidence)
    across = None  # two --formats runs: also a paired test per format (checked before anything is printed)
    if len(runs) == 2 and all(has_formats(r, cmp.task) for r in runs):
        across = compare_formats(list(runs), task=cmp.task, metric=(metric or [None])[0], seed=seed,
                                 n_resamples=resamples, confidence=confidence)
    console = Console()
    level = f"{confidence:.0%}"
    table = Table(title=f"{cmp.task}: {cmp.n_examples} shared examples (mean [{level} CI])")
    table.add_column("metric")
    for name in cmp.runs:
        table.add_column(name, justify="right")
    for m in cmp.metrics:
        cells = [f"{_pct(s['mean'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]"
                 for s in (cmp.summaries[name][m] for name in cmp.runs)]
        table.add_row(m, *cells)
    print_table(table, console)

    tests = Table(title=f"paired tests against {cmp.runs[0]} (difference = run - baseline)")
    for col in ("run", "metric", "diff", f"{level} CI", "p (bootstrap)", "gained/lost", "p (McNemar)"):
        tests.add_column(col, justify="right" if col not in ("run", "metric") else "left")
    for t in cmp.tests:
        b = t.bootstrap
        mc = t.mcnemar
        tests.add_row(t.other, t.metric, f"{b.diff:+.4g}", f"[{b.ci_low:+.4g}, {b.ci_high:+.4g}]", f"{b.p_value:.3g}",
                      f"{mc.b}/{mc.c}" if mc else "-", f"{mc.p_value:.3g} ({mc.method})" if mc else "-")
    print_table(tests, console)
    console.print("gained/lost: examples wrong→right / right→wrong against the baseline (0/1 metrics).")

    if show_flips > 0:
        for t in cmp.tests:
            if not (t.gained or t.lost):
                continue
            console.print(f"\n[bold]{t.metric}: {t.other} vs {t.baseline}[/bold]  "
                          f"{len(t.gained)} gained, {len(t.lost)} lost")
            for label, ids in (("gained", t.gained), ("lost", t.lost)):
                for doc_id in ids[:show_flips]:
                    row = cmp.rows[t.other][doc_id]
                    base_resp = (cmp.rows[t.baseline][doc_id].get("responses") or [""])[0]
                    resp = (row.get("responses") or [""])[0]
                    console.print(f"  {label} doc {doc_id}: target={str(row.get('target', ''))[:60]!r} "
                                  f"{t.baseline}={str(base_resp)[:60]!r} {t.other}={str(resp)[:60]!r}",
                                  markup=False, highlight=False)
    if across is not None:
        print_format_comparison(console, across, level)
    if json_out is not None:
        atomic_write_json(json_out, {**cmp.as_dict(), "across_formats": across.as_dict() if across else None})
        console.print(f"wrote {json_out}")


def print_format_comparison(console, across, level: str) -> None:
    """Per format: the paired difference and its interval; then how often the ranking holds or flips."""
    from rich.table import Table

    d = across.as_dict()
    table = Table(title=f"{across.metric} across {d['formats']} prompt formats: {across.other} - {across.baseline}")
    for col in ("format", "diff", f"{level} CI", "p (bootstrap)", "p (McNemar)", "significant"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for t in across.tests:
        b, mc = t.bootstrap, t.mcnemar
        label = f"{t.format_id}{' (original)' if t.original else ''}: {t.format!r}"
        table.add_row(label, f"{b.diff:+.4g}", f"[{b.ci_low:+.4g}, {b.ci_high:+.4g}]", f"{b.p_value:.3g}",
                      f"{mc.p_value:.3g}" if mc else "-",
                      {1: f"{across.other} better", -1: f"{across.baseline} better", 0: "-"}[t.significant])
    print_table(table, console)
    console.print(f"{across.other} significantly better in {d['other_significantly_better']} of {d['formats']} formats, "
                  f"{across.baseline} in {d['baseline_significantly_better']}; ahead: {across.other} "
                  f"{d['other_ahead']}, {across.baseline} {d['baseline_ahead']}, tied {d['tied']}; "
                  f"ranking flips in {d['ranking_flips']} of {d['format_pairs']} format pairs", markup=False)


def report(
    runs: list[Path] = typer.Argument(..., help="Run folders to include."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
    max_samples: int = typer.Option(1000, "--max-samples", help="Rows shown per samples file."),
    title: str = typer.Option("llmgen report", help="Page title."),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output file (never one of the runs)"),
) -> None:
    """Write one self-contained static HTML report (no network; images embedded) for the runs."""
    from llmgen.errors import LlmgenError
    from llmgen.io import check_output_file
    from llmgen.report import write_report

    if max_samples < 0:
        raise LlmgenError(f"--max-samples must be >= 0, got {max_samples}")
    check_output_file(output, overwrite=overwrite, inputs=runs)
    path = write_report(list(runs), output, max_samples=max_samples, title=title)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("report")(report)
