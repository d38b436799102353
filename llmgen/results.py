"""The one results schema: what ``llmgen eval`` and every recipe write into a run folder.

``results.json`` holds, per evaluation (a task, or a recipe's task at one checkpoint / sweep cell),
the corpus metrics (``results``), their standard errors and bootstrap intervals (``uncertainty``)
and the number of evaluated examples (``n_samples``), next to the model, backend, versions, seed
and timings. ``samples.jsonl`` holds one row per evaluated example, tagged by ``task`` (the
evaluation's name), with its prompt, target, responses and per-example ``metrics``. Recipes add
their own keys beside these (a pass@k curve, a sweep table); ``llmgen compare`` and
``llmgen report`` read only the keys below, so one check (``check_results``) covers every writer.
"""

from __future__ import annotations

import importlib
import math
import platform
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_json, read_jsonl

RESULTS_KEYS = ("model", "backend", "versions", "seed", "timings", "results", "uncertainty", "n_samples", "tasks")
SAMPLE_KEYS = ("task", "doc_id", "prompt", "target", "responses", "metrics")


def versions() -> dict[str, str]:
    """Python's and the installed libraries' versions (the import is what a run already loaded)."""
    out = {"python": platform.python_version()}
    for mod in ("llmgen", "torch", "transformers", "vllm", "peft", "accelerate"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            pass
    return out


def results_record(*, config: dict[str, Any], model: str, backend: dict[str, Any], seed: int,
                   timings: dict[str, float], results: dict[str, dict[str, float]],
                   uncertainty: dict[str, dict[str, dict[str, float]]], n_samples: dict[str, int],
                   tasks: dict[str, dict[str, Any]], cache: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``results.json`` dict in the one schema (``extra``: a recipe's own keys, added beside)."""
    out = {"config": config, "model": model, "backend": backend, "versions": versions(), "seed": seed,
           "timings": timings, "cache": cache or {}, "results": results, "uncertainty": uncertainty,
           "n_samples": n_samples, "tasks": tasks}
    clash = sorted(set(out) & set(extra or {}))
    if clash:
        raise LlmgenError(f"a recipe's results key {clash[0]!r} would overwrite the schema's")
    return {**out, **(extra or {})}


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and not math.isinf(v))


def check_record(out: Any, where: str = "results.json") -> None:
    """A ``results.json`` dict against the schema: one error line naming the first problem."""
    if not isinstance(out, dict):
        raise LlmgenError(f"{where}: expected a JSON object")
    missing = [k for k in RESULTS_KEYS if k not in out]
    if missing:
        raise LlmgenError(f"{where}: missing key {missing[0]!r} (the schema needs {', '.join(RESULTS_KEYS)})")
    results = out["results"]
    if not isinstance(results, dict) or not results:
        raise LlmgenError(f"{where}: 'results' must map each evaluation to its metrics")
    for task, metrics in results.items():
        if not isinstance(metrics, dict) or not metrics:
            raise LlmgenError(f"{where}: results[{task!r}] must be a non-empty mapping of metric to value")
        bad = next((m for m, v in metrics.items() if not _is_number(v)), None)
        if bad is not None:
            raise LlmgenError(f"{where}: results[{task!r}][{bad!r}] is not a number: {metrics[bad]!r}")
    for key in ("uncertainty", "n_samples", "tasks"):
        if not isinstance(out[key], dict) or set(out[key]) != set(results):
            raise LlmgenError(f"{where}: {key!r} must have one entry per evaluation in 'results' "
                              f"({sorted(results)}), has {sorted(out[key]) if isinstance(out[key], dict) else out[key]!r}")
    for task, unc in out["uncertainty"].items():
        extra = sorted(set(unc) - set(results[task]))
        if extra:
            raise LlmgenError(f"{where}: uncertainty[{task!r}] has metric {extra[0]!r} that results[{task!r}] lacks")
    bad_n = next((t for t, n in out["n_samples"].items() if not isinstance(n, int) or n < 1), None)
    if bad_n is not None:
        raise LlmgenError(f"{where}: n_samples[{bad_n!r}] must be a positive integer")


def check_rows(rows: list[dict], out: dict[str, Any], where: str = "samples.jsonl") -> None:
    """``samples.jsonl`` rows against the schema and against ``results.json``'s ``n_samples``."""
    counts: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        missing = [k for k in SAMPLE_KEYS if k not in row]
        if missing:
            raise LlmgenError(f"{where} line {i}: missing key {missing[0]!r} (each row needs {', '.join(SAMPLE_KEYS)})")
        if row["task"] not in out["results"]:
            raise LlmgenError(f"{where} line {i}: task {row['task']!r} is not an evaluation of results.json")
        if not isinstance(row["responses"], list):
            raise LlmgenError(f"{where} line {i}: 'responses' must be a list")
        if not isinstance(row["metrics"], dict) or not all(_is_number(v) for v in row["metrics"].values()):
            raise LlmgenError(f"{where} line {i}: 'metrics' must map metric names to numbers")
        counts[row["task"]] = counts.get(row["task"], 0) + 1
    for task, n in out["n_samples"].items():
        if counts.get(task, 0) != n:
            raise LlmgenError(f"{where}: {counts.get(task, 0)} rows of {task!r}, results.json says n_samples {n}")


def check_results(run_dir: str | Path) -> dict[str, Any]:
    """Check a run folder's ``results.json`` and ``samples.jsonl``; returns the parsed results.

    Raises ``LlmgenError`` (one line) on the first departure from the schema."""
    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise LlmgenError(f"not a run folder (no results.json): {run}")
    out = read_json(run / "results.json")
    check_record(out, str(run / "results.json"))
    rows = read_jsonl(run / "samples.jsonl", required=list(SAMPLE_KEYS))
    check_rows(rows, out, str(run / "samples.jsonl"))
    return out
