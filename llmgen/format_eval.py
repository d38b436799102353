"""``llmgen eval --formats K``: every metric as a range over plausible prompt formats.

FormatSpread (Sclar et al., ICLR 2024) showed that one prompt format gives one arbitrary point in a
range that can span tens of accuracy points, so a task's score should be reported as
original / min / median / max / spread over formats. Any task declared as fields with descriptors
(``Task.input_fields`` + ``output_descriptor``) maps onto the FormatSpread grammar; we sample K
distinct plausible formats (seeded, the original first) and evaluate each with the ordinary
``llmgen eval`` machinery, so format 0 reproduces plain ``llmgen eval`` exactly.

With ``budget`` (``--format-budget E``) the Thompson-sampling bandit of ``llmgen.evals.format_spread``
spends E example evaluations to find the best and worst formats instead of evaluating all K fully.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.evaluate import (
    EvalConfig,
    evaluate_task,
    open_cache,
    uncertainty,
    validate,
    versions,
)
from llmgen.formats import Field, Format, Layout, sample_formats, save_formats
from llmgen.io import atomic_write_json, atomic_write_jsonl
from llmgen.tasks import Renderer, Task

BANDIT_BATCH = 20  # B: examples per arm pull (the paper's default)


def task_layout(task: Task) -> Layout:
    """The FormatSpread layout of a task declared as fields; a clear error for plain templates."""
    if task.template is not None:
        raise LlmgenError(f"task {task.name!r} is a plain template, not fields with descriptors: "
                          "--formats needs a task declared with fields (YAML 'fields:' or a built-in task)")
    return Layout(fields=tuple(Field(d, k) for d, k in task.input_fields), output=task.output_descriptor)


def format_renderer(fmt: Format, task: Task) -> Renderer:
    """A ``Task`` renderer that spells examples in ``fmt``.

    The query ends at the empty output field with trailing spaces removed (``Answer:`` rather than
    ``Answer: ``), as the task's default renderer does, so the grammar's original format renders
    exactly like plain ``llmgen eval``.
    """
    layout = task_layout(task)
    keys = [k for _, k in task.input_fields]

    def render(fields: Sequence[tuple[str, str]], output_descriptor: str, output: str) -> str:
        values = {k: text for k, (_, text) in zip(keys, fields, strict=True)}
        text = fmt.render(layout, values, answer=output or None)
        return text if output else text.rstrip(" ")

    return render


def _renderers(task: Task, formats: list[Format]) -> list[Renderer | None]:
    """Format 0 uses the task's own renderer (``None``) so that it is plain ``llmgen eval``."""
    return [None] + [format_renderer(f, task) for f in formats[1:]]


def _summary(values: Sequence[float], original: float) -> dict[str, float]:
    return {"original": original, "min": min(values), "median": float(statistics.median(values)),
            "max": max(values), "spread": max(values) - min(values), "formats": len(values)}


def _primary_outcome(row: dict) -> bool:
    """The bandit's 0/1 outcome: first sample correct (generate) or accuracy (multiple choice)."""
    if "correct" in row:
        return bool(row["correct"][0])
    return bool(row["metrics"].get("acc", 0.0) >= 1.0)


def _evaluate_formats(backend, task: Task, config: EvalConfig, cache, formats: list[Format],
                      budget: int | None, progress=None) -> tuple[list[dict | None], list[list[dict]], dict]:
    """Per-format aggregates and rows (exhaustive), or the bandit's pulls plus full best/worst/original.

    Requests go through the eval request cache, so re-running, or re-evaluating the bandit's best
    and worst arms on all examples, only pays for prompts not seen before.
    """
    renderers = _renderers(task, formats)
    if budget is None:
        aggs, all_rows = [], []
        bar = progress.add_task(f"{task.name}: formats", total=len(renderers)) if progress is not None else None
        for i, r in enumerate(renderers):
            agg, rows = evaluate_task(backend, task, config, cache, renderer=r)
            if progress is not None:
                progress.advance(bar)
            for row in rows:
                row["format_id"] = i
            aggs.append(agg)
            all_rows.append(rows)
        return aggs, all_rows, {"mode": "exhaustive", "evaluations": len(formats) * len(task.docs)}

    from llmgen.evals.format_spread import bandit_spread

    n = len(task.docs)
    batch = min(BANDIT_BATCH, n)

    def evaluate(arm: int, start: int, stop: int) -> list[bool]:
        sub = replace(task, docs=task.docs[start:stop])
        _, rows = evaluate_task(backend, sub, config, cache, renderer=renderers[arm])
        return [_primary_outcome(r) for r in rows]

    res = bandit_spread(evaluate, len(formats), n, budget, batch, seed=config.seed, original=0)
    aggs: list[dict | None] = [None] * len(formats)
    all_rows: list[list[dict]] = [[] for _ in formats]
    for arm in sorted({0, res.best, res.worst}):  # fully evaluated arms: every metric (cached requests)
        agg, rows = evaluate_task(backend, task, config, cache, renderer=renderers[arm])
        for row in rows:
            row["format_id"] = arm
        aggs[arm], all_rows[arm] = agg, rows
    info = {"mode": "bandit", "budget": budget, "batch": batch, "budget_spent": res.budget_spent,
            "evaluations": res.total_evaluations, "best": res.best, "worst": res.worst,
            "pulls": {"successes": res.successes, "counts": res.counts}}
    return aggs, all_rows, info


def run_format_eval(config: EvalConfig, num_formats: int, budget: int | None = None, backend=None,
                    show_progress: bool = True) -> dict[str, Any]:
    """Evaluate every task of ``config`` in ``num_formats`` formats; write and print the run.

    The run folder holds what plain ``llmgen eval`` writes for the original format (``results.json``
    with ``results``/``uncertainty``, ``samples.jsonl``), so ``llmgen compare`` works against plain
    runs, plus ``results.json["format_spread"]`` (per-format metrics and the original / min / median /
    max / spread summary), ``format_samples.jsonl`` (every format's rows, tagged ``format_id``) and
    ``formats_<task>.json`` (the sampled set, reusable).
    """
    if num_formats < 1:
        raise LlmgenError(f"--formats must be >= 1, got {num_formats}")
    if budget is not None and budget < 1:
        raise LlmgenError(f"--format-budget must be >= 1, got {budget}")
    tasks = validate(config)
    layouts = {t.name: task_layout(t) for t in tasks}
    sets = {t.name: sample_formats(layouts[t.name], num_formats, seed=config.seed) for t in tasks}
    if budget is not None:
        from llmgen.evals.format_spread import check_budget

        for t in tasks:
            check_budget(budget, min(BANDIT_BATCH, len(t.docs)), len(t.docs), len(sets[t.name]))

    t0 = time.time()
    own = backend is None
    if own:
        from llmgen.backends import get_backend

        backend = get_backend(config.backend, config.model, **config.model_args)
    cache = open_cache(config)
    spread: dict[str, Any] = {}
    results, unc, original_rows, format_rows = {}, {}, [], []
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not show_progress) as progress:
            for task in tasks:
                formats = sets[task.name]
                aggs, rows, info = _evaluate_formats(backend, task, config, cache, formats, budget, progress)
                results[task.name] = aggs[0]
                unc[task.name] = {m: uncertainty(rows[0], m, config.seed) for m in aggs[0]}
                original_rows += [{k: v for k, v in r.items() if k != "format_id"} for r in rows[0]]
                format_rows += [r for rs in rows for r in rs]
                done = [i for i, a in enumerate(aggs) if a is not None]
                spread[task.name] = {
                    **info,
                    "formats": [{"format_id": i, "original": i == 0, "evaluated": aggs[i] is not None,
                                 "format": formats[i].template(layouts[task.name]),
                                 "attributes": formats[i].to_dict(), "metrics": aggs[i] or {},
                                 **({"pulls": {"correct": info["pulls"]["successes"][i],
                                               "examples": info["pulls"]["counts"][i]}} if "pulls" in info else {})}
                                for i in range(len(formats))],
                    "summary": {m: _summary([aggs[i][m] for i in done], aggs[0][m]) for m in aggs[0]},
                    "example_prompts": [rows[i][0]["prompt"] for i in done],
                }
    finally:
        cache.close()
        if own:
            backend.close()
    out = {"config": asdict(config), "model": config.model, "backend": backend.describe(), "versions": versions(),
           "seed": config.seed, "timings": {"total_s": round(time.time() - t0, 2)}, "results": results,
           "uncertainty": unc, "n_samples": {t.name: len(t.docs) for t in tasks},
           "tasks": {t.name: t.describe() for t in tasks},
           "format_eval": {"num_formats": num_formats, "budget": budget}, "format_spread": spread}
    if config.output_dir:
        run = Path(config.output_dir)
        atomic_write_json(run / "config.json", {**asdict(config), "formats": num_formats, "format_budget": budget})
        for t in tasks:
            save_formats(run / f"formats_{t.name}.json", sets[t.name], layouts[t.name], config.seed)
        if config.log_samples:
            atomic_write_jsonl(run / "samples.jsonl", original_rows)
            atomic_write_jsonl(run / "format_samples.jsonl", format_rows)
        atomic_write_json(run / "results.json", out)
    if show_progress:
        print_format_results(out)
    out["samples"] = original_rows
    return out


def print_format_results(out: dict[str, Any]) -> None:
    """One row per task and metric: original [95% CI], min, median, max and spread (in points for rates)."""
    from rich.console import Console
    from rich.table import Table

    modes = sorted({e["mode"] for e in out["format_spread"].values()})
    table = Table(title=f"{out['model']}: scores over prompt formats ({', '.join(modes)})")
    for col in ("task", "metric", "original", "95% CI", "min", "median", "max", "spread", "formats"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, entry in out["format_spread"].items():
        for m, s in entry["summary"].items():
            u = out["uncertainty"][task][m]
            table.add_row(task, m, f"{s['original']:.3f}", f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}]", f"{s['min']:.3f}",
                          f"{s['median']:.3f}", f"{s['max']:.3f}", f"{s['spread']:.3f}", str(s["formats"]))
    Console().print(table)

