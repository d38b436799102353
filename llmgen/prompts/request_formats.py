"""``llmgen eval --formats K`` for tasks that build their own requests (``output_type: requests``, TOFU).

A ``requests`` task (``llmgen.tasks.tofu.TofuTask``) turns each document into loglikelihood and
generation requests of its own (the model family's template or the chat template around the
question, several answers scored per question), and scores them with its own per-document and corpus
metrics (``score_outputs``, ``aggregate_rows``). Its prompt format cannot be varied by re-rendering
the whole prompt, as a task declared as fields is (``llmgen.prompts.render``); what can be varied is
the text of its input field before the task builds its requests:

- the layout is the task's one input field, ``Field(descriptor, key)`` (TOFU: ``Question`` →
  ``question``; a task with several is refused), and the output descriptor (``Answer``), varied by
  the FormatSpread grammar (``llmgen.prompts.formats``: casing, separators, spacing);
- format 0 is the task's own prompt: the field values as they are (TOFU's bare question, no
  descriptor), so it reproduces plain ``llmgen eval`` request for request; formats 1.. are the
  grammar's original (``Question: <q>`` newline ``Answer:``) and then sampled formats;
- a format's rendering, trailing whitespace removed, replaces the field value in the document; the
  task then builds its requests as always (TOFU: the rendered text takes the question's place inside
  the family or chat template), so the answers it scores, and how it scores them, stay fixed.

Each format is scored by the runner's own ``evaluate_request_task`` (the request cache, the rows)
and aggregated by the task's ``aggregate_rows`` (TOFU: forget quality against the same retain logs
for every format). Per format and metric a 95% interval comes from a seeded bootstrap over documents,
stratified by the task's groups (``llmgen.evals.stats.bootstrap_statistic_ci``: TOFU's forget
quality and model utility are not means). The run folder has ``--formats``' schema:
``results.json`` with ``format_spread[task]`` (per-format metrics, summary, extremes), the original
format's metrics under ``results``/``uncertainty``, ``samples.jsonl`` and ``format_samples.jsonl``
(rows tagged ``format_id``). The bandit (``--format-budget``) needs a 0/1 outcome per document,
which continuous metrics such as TOFU's do not give: it is refused before any model loads.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmgen.backends import get_backend
from llmgen.display import RunProgress
from llmgen.errors import LlmgenError
from llmgen.eval_config import EvalConfig
from llmgen.evals.format_spread import spread_summary
from llmgen.evals.stats import bootstrap_statistic_ci
from llmgen.evaluate import evaluate_request_task, open_cache
from llmgen.io import atomic_write_json, atomic_write_jsonl, safe_filename
from llmgen.prompts.formats import Field, Format, Layout, sample_formats
from llmgen.results import results_record
from llmgen.tasks import Task

RESAMPLES = 1000
"""Bootstrap replicates per format (each recomputes every metric): ``llmgen.evals.stats.summarize``'s default."""
ORIGINAL = "{}"
"""Format 0's template: the task's own prompt (each field's value, unchanged)."""


def request_layout(task: Task) -> Layout:
    """The grammar's layout of a ``requests`` task's input: its input field, then its output descriptor.
    One field only: its rendering replaces that field's value inside the task's own template."""
    if len(task.input_fields) != 1:
        raise LlmgenError(f"--formats on task {task.name!r}, which builds its own requests, needs exactly one "
                          f"input field (it has {len(task.input_fields)})")
    return Layout(fields=tuple(Field(d, k) for d, k in task.input_fields), output=task.output_descriptor)


def request_formats(task: Task, num_formats: int, seed: int) -> list[Format | None]:
    """``None`` (the task's own prompt) then ``num_formats - 1`` grammar formats: the grammar's
    original first, then distinct plausible samples (``sample_formats``, seeded)."""
    if num_formats < 1:
        raise LlmgenError(f"--formats must be >= 1, got {num_formats}")
    return [None, *sample_formats(request_layout(task), num_formats - 1, seed=seed)] if num_formats > 1 else [None]


def render_fields(doc: dict, fmt: Format | None, layout: Layout) -> dict:
    """``doc`` with its input field replaced by its rendering in ``fmt`` (trailing whitespace
    removed: the task's own template follows); ``None`` keeps the document as it is."""
    if fmt is None:
        return doc
    key = layout.fields[0].key
    return {**doc, key: fmt.render(layout, {key: str(doc[key])}).rstrip()}


def format_variant(task: Task, fmt: Format | None, layout: Layout) -> Task:
    """A shallow copy of ``task`` whose documents carry their fields rendered in ``fmt``."""
    if fmt is None:
        return task
    variant = copy.copy(task)
    variant.docs = [render_fields(d, fmt, layout) for d in task.docs]
    return variant


def metric_intervals(task: Task, rows: Sequence[dict], metrics: Sequence[str], seed: int,
                     n_resamples: int = RESAMPLES) -> dict[str, dict[str, float]]:
    """Per corpus metric: its value and a 95% percentile interval from a bootstrap over documents
    (resampled within each of the task's groups), each replicate aggregated by ``task.aggregate_rows``."""
    key = task.group_key
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get(key) if key else None, []).append(i)
    value = task.aggregate_rows(list(rows))

    def stat(idx: np.ndarray) -> list[float]:
        try:
            agg = task.aggregate_rows([rows[i] for i in idx])
        except LlmgenError:  # a replicate the statistics are undefined on (e.g. an empty set)
            return [float("nan")] * len(metrics)
        return [float(agg.get(m, float("nan"))) for m in metrics]

    cis = bootstrap_statistic_ci(list(groups.values()), stat, n_resamples=n_resamples, seed=seed)
    return {m: {"value": float(value[m]), "ci_low": low, "ci_high": high, "n": len(rows), "resamples": n_resamples}
            for m, (low, high) in zip(metrics, cis, strict=True)}


def check_request_formats(tasks: Sequence[Task], budget: int | None) -> None:
    """Refuse, before any model loads, what this path cannot do: the bandit, a run mixing ``requests``
    tasks with others (whose formats are spelled by ``llmgen.prompts.render``), several input fields."""
    if budget is not None:
        raise LlmgenError("--format-budget needs a 0/1 outcome per document; a task that builds its own requests "
                          f"({next(t.name for t in tasks if t.output_type == 'requests')}) has continuous metrics: use --formats K alone (every format, every document)")
    other = [t.name for t in tasks if t.output_type != "requests"]
    if other:
        raise LlmgenError(f"--formats runs tasks that build their own requests (TOFU) apart from others: "
                          f"run {other[0]!r} in its own --formats run")
    for t in tasks:
        request_layout(t)


def evaluate_formats(backend, task: Task, num_formats: int, config: EvalConfig, cache,
                     progress=None) -> tuple[dict[str, Any], list[dict]]:
    """``task`` in ``num_formats`` formats on ``backend``: ``(format_spread entry, rows)``, the rows of
    every format tagged ``format_id`` (format 0's are plain ``llmgen eval``'s). Formats are sampled and
    intervals resampled with ``config.seed``. ``llmgen eval --formats`` and the unlearning recipe's
    checkpoint evaluations (``eval_formats``) both come here."""
    layout = request_layout(task)
    formats = request_formats(task, num_formats, config.seed)
    per_format, rows_out = [], []
    for i, fmt in enumerate(formats):
        agg, rows = evaluate_request_task(backend, format_variant(task, fmt, layout), config, cache, progress)
        per_format.append((agg, rows, metric_intervals(task, rows, list(agg), config.seed)))
        rows_out += [{**r, "format_id": i} for r in rows]
    return request_spread_entry(per_format, formats, layout), rows_out


def run_request_format_eval(config: EvalConfig, tasks: Sequence[Task], num_formats: int, budget: int | None = None,
                            backend=None, show_progress: bool = True) -> dict[str, Any]:
    """Every ``requests`` task of ``config`` in ``num_formats`` formats; write the run (see the module
    docstring). ``tasks`` are ``llmgen.evaluate.validate(config)``'s."""
    check_request_formats(tasks, budget)
    t0 = time.time()
    own = backend is None
    if own:
        backend = get_backend(config.backend, config.model, **config.model_args)
    cache = open_cache(config)
    entries: dict[str, dict] = {}
    all_rows: list[dict] = []
    try:
        with RunProgress(enabled=show_progress) as progress:
            for task in tasks:
                entries[task.name], rows = evaluate_formats(backend, task, num_formats, config, cache, progress)
                all_rows += rows
        described = backend.describe()
    finally:
        cache.close()
        if own:
            backend.close()
    original_rows = [{k: v for k, v in r.items() if k != "format_id"} for r in all_rows if r["format_id"] == 0]
    out = results_record(config={**asdict(config), "formats": num_formats, "format_budget": budget},
                         model=config.model, backend=described, seed=config.seed,
                         timings={"total_s": round(time.time() - t0, 2)},
                         results={n: e["formats"][0]["metrics"] for n, e in entries.items()},
                         uncertainty={n: e["formats"][0]["uncertainty"] for n, e in entries.items()},
                         n_samples={t.name: len(t.docs) for t in tasks}, tasks={t.name: t.describe() for t in tasks},
                         extra={"format_eval": {"num_formats": num_formats, "budget": budget}, "format_spread": entries})
    if config.output_dir:
        write_request_format_run(config.output_dir, out, original_rows, all_rows, entries, config)
    out["samples"] = original_rows
    return out


def request_spread_entry(per_format: Sequence[tuple[dict, list[dict], dict]], formats: Sequence[Format | None],
                         layout: Layout) -> dict[str, Any]:
    """``format_spread[task]`` in ``--formats``' schema: per-format metrics and intervals, the summary
    (original/min/median/max/spread per metric) and, per metric, the formats at its extremes."""
    metrics = list(per_format[0][0])
    values = {m: [agg.get(m, float("nan")) for agg, _, _ in per_format] for m in metrics}

    def template(fmt: Format | None) -> str:
        return ORIGINAL if fmt is None else fmt.template(layout)

    def example(rows: list[dict]) -> str | None:
        return rows[0]["prompt"] if rows else None

    extremes = {}
    for m in metrics:
        vals = np.asarray(values[m], dtype=float)
        if np.all(np.isnan(vals)):
            continue
        hi, lo = int(np.nanargmax(vals)), int(np.nanargmin(vals))
        extremes[m] = {"max": {"format_id": hi, "value": float(vals[hi]), "format": template(formats[hi]),
                               "example_prompt": example(per_format[hi][1])},
                       "min": {"format_id": lo, "value": float(vals[lo]), "format": template(formats[lo]),
                               "example_prompt": example(per_format[lo][1])}}
    n = len(per_format[0][1])
    return {
        "mode": "exhaustive", "evaluations": len(formats) * n, "exhaustive_evaluations": len(formats) * n,
        "original": "the task's own prompt (format 0): each input field as it is, no descriptor",
        "layout": layout.to_dict(),
        "formats": [{"format_id": i, "original": i == 0, "evaluated": True, "format": template(fmt),
                     "attributes": {} if fmt is None else fmt.to_dict(), "metrics": agg, "uncertainty": ci}
                    for i, (fmt, (agg, _, ci)) in enumerate(zip(formats, per_format, strict=True))],
        "summary": {m: spread_summary([v for v in values[m] if not np.isnan(v)], values[m][0]) for m in metrics
                    if not np.isnan(values[m][0])},
        "extremes": extremes,
        "example_prompts": [example(rows) for _, rows, _ in per_format],
    }


def write_request_format_run(run: str | Path, out: dict, original_rows: list[dict], all_rows: list[dict],
                             entries: dict[str, dict], config: EvalConfig) -> None:
    """``config.json``, ``formats_<task>.json`` (format 0 is ``null``: the task's own prompt),
    ``samples.jsonl``, ``format_samples.jsonl``, ``results.json``."""
    run = Path(run)
    atomic_write_json(run / "config.json", out["config"])
    for name, entry in entries.items():
        atomic_write_json(run / safe_filename(f"formats_{name}.json"), {
            "layout": entry["layout"], "seed": config.seed,
            "formats": [f["attributes"] if f["format_id"] else None for f in entry["formats"]],
            "templates": [f["format"] for f in entry["formats"]]})
    if config.log_samples:
        atomic_write_jsonl(run / "samples.jsonl", original_rows)
        atomic_write_jsonl(run / "format_samples.jsonl", all_rows)
    atomic_write_json(run / "results.json", out)
