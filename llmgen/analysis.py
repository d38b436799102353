"""Load run folders and compare runs on the same examples with paired tests.

A run folder (written by ``llmgen eval``) holds ``results.json`` and one ``samples_<task>.jsonl``
per task, each row carrying ``doc_id``, ``target`` and a ``metrics`` dict of per-example scores.
Comparing two runs is only meaningful on the *same* examples, so ``compare_runs`` checks that
the tasks and the example sets match and raises ``LlmgenError`` otherwise, instead of reporting a
difference that mixes model quality with dataset differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.evals.stats import (
    McNemarResult,
    PairedBootstrapResult,
    is_binary,
    mcnemar,
    paired_bootstrap,
    summarize,
)
from llmgen.io import read_json, read_jsonl


@dataclass
class Run:
    """One run folder: its ``results.json`` and (lazily) the per-example rows of each task."""

    path: Path
    results: dict[str, Any]
    name: str = ""
    _samples: dict[str, list[dict]] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.path / "config.json"
        if cfg.is_file():
            return read_json(cfg)
        return dict(self.results.get("config") or {})

    @property
    def tasks(self) -> list[str]:
        res = self.results.get("results")
        return list(res) if isinstance(res, dict) else []

    def samples_path(self, task: str) -> Path | None:
        """``samples_<task>.jsonl`` if present, else the run's ``samples.jsonl`` (rows tagged by ``task``)."""
        candidate = self.path / f"samples_{task}.jsonl"
        if candidate.is_file():
            return candidate
        plain = self.path / "samples.jsonl"
        return plain if plain.is_file() else None

    def samples(self, task: str) -> list[dict]:
        """The per-example rows of one task (rows of other tasks in a shared file are left out)."""
        if task not in self._samples:
            path = self.samples_path(task)
            if path is None:
                raise LlmgenError(f"run {self.path} has no per-example samples (samples.jsonl) for task {task!r}")
            rows = read_jsonl(path, required=["doc_id", "metrics"])
            if any("task" in r for r in rows):
                rows = [r for r in rows if r.get("task") == task]
            elif len(self.tasks) > 1 and path.name == "samples.jsonl":
                raise LlmgenError(f"{path}: rows carry no 'task' field, so the tasks of this run cannot be told apart")
            if not rows:
                raise LlmgenError(f"{path}: no rows for task {task!r}")
            self._samples[task] = rows
        return self._samples[task]


def load_run(path: str | Path) -> Run:
    """Read a run folder; a clear error if it is not a folder with a ``results.json``."""
    p = Path(path)
    if not p.is_dir():
        raise LlmgenError(f"run folder not found: {p}")
    if not (p / "results.json").is_file():
        raise LlmgenError(f"not a run folder (no results.json): {p}")
    results = read_json(p / "results.json")
    if not isinstance(results, dict):
        raise LlmgenError(f"{p / 'results.json'}: expected a JSON object")
    return Run(path=p, results=results, name=p.name)


def _unique_names(runs: list[Run]) -> None:
    """Label runs by folder name, falling back to the path when two folders share a name."""
    names = [r.path.name for r in runs]
    for r in runs:
        r.name = r.path.name if names.count(r.path.name) == 1 else str(r.path)


def per_example(rows: list[dict], metric: str) -> dict[int, float]:
    """``doc_id -> score`` for one metric (booleans as 0/1; rows without a finite value skipped)."""
    out: dict[int, float] = {}
    for row in rows:
        value = row["metrics"].get(metric) if isinstance(row.get("metrics"), dict) else None
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[row["doc_id"]] = float(value)
    return out


@dataclass
class PairedTest:
    """One metric of one run against the baseline (the first run), on the shared examples."""

    metric: str
    baseline: str
    other: str
    bootstrap: PairedBootstrapResult
    mcnemar: McNemarResult | None
    gained: list[int]  # doc_ids wrong in the baseline and right in the other run
    lost: list[int]  # doc_ids right in the baseline and wrong in the other run


@dataclass
class Comparison:
    """Everything ``llmgen compare`` prints: per-run summaries, paired tests, flipped examples."""

    task: str
    runs: list[str]
    metrics: list[str]
    n_examples: int
    summaries: dict[str, dict[str, dict[str, float]]]  # run -> metric -> summarize()
    tests: list[PairedTest]
    rows: dict[str, dict[int, dict]]  # run -> doc_id -> sample row (to show flipped examples)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "runs": self.runs, "metrics": self.metrics, "n_examples": self.n_examples,
            "summaries": self.summaries,
            "tests": [{"metric": t.metric, "baseline": t.baseline, "other": t.other,
                       "bootstrap": t.bootstrap.as_dict(),
                       "mcnemar": t.mcnemar.as_dict() if t.mcnemar else None,
                       "gained": t.gained, "lost": t.lost} for t in self.tests],
        }


def common_task(runs: list[Run], task: str | None = None) -> str:
    """The task to compare: ``task`` if every run has it, else the single task all runs share."""
    if task is not None:
        missing = [r.name for r in runs if task not in r.tasks]
        if missing:
            raise LlmgenError(f"runs not comparable: task {task!r} missing from run(s) {', '.join(missing)}")
        return task
    shared = set(runs[0].tasks)
    for r in runs[1:]:
        shared &= set(r.tasks)
    if not shared:
        listing = "; ".join(f"{r.name}: {', '.join(r.tasks) or 'none'}" for r in runs)
        raise LlmgenError(f"runs not comparable: no task in common ({listing})")
    if len(shared) > 1:
        raise LlmgenError(f"runs share several tasks ({', '.join(sorted(shared))}); pick one with --task")
    return next(iter(shared))


def _check_same_examples(runs: list[Run], task: str) -> list[int]:
    """The shared doc_ids, after checking every run evaluated the same examples with the same targets."""
    base = runs[0]
    base_rows = {row["doc_id"]: row for row in base.samples(task)}
    if len(base_rows) != len(base.samples(task)):
        raise LlmgenError(f"run {base.name}: duplicate doc_id in samples for task {task!r}")
    for r in runs[1:]:
        rows = {row["doc_id"]: row for row in r.samples(task)}
        only_base, only_other = set(base_rows) - set(rows), set(rows) - set(base_rows)
        if only_base or only_other:
            raise LlmgenError(
                f"runs not comparable: different example sets for task {task!r} "
                f"({base.name}: {len(base_rows)} examples, {r.name}: {len(rows)}; "
                f"{len(only_base)} only in {base.name}, {len(only_other)} only in {r.name})")
        for doc_id, row in rows.items():
            if "target" in row and "target" in base_rows[doc_id] and row["target"] != base_rows[doc_id]["target"]:
                raise LlmgenError(f"runs not comparable: example {doc_id} of task {task!r} has a different "
                                  f"target in {r.name} than in {base.name}")
    return sorted(base_rows)


def compare_runs(paths: list[str | Path], task: str | None = None, metrics: list[str] | None = None,
                 seed: int = 0, n_resamples: int = 10_000, confidence: float = 0.95) -> Comparison:
    """Compare two or more runs of one task on the same examples; the first run is the baseline.

    For every metric present in all runs: a bootstrap summary per run, a paired bootstrap of the
    difference to the baseline, McNemar's test when both runs' scores are 0/1, and the doc_ids
    that flipped between right and wrong.
    """
    if len(paths) < 2:
        raise LlmgenError(f"compare needs at least two runs, got {len(paths)}")
    runs = [load_run(p) for p in paths]
    if len({r.path.resolve() for r in runs}) < len(runs):
        raise LlmgenError("compare got the same run folder twice")
    _unique_names(runs)
    task = common_task(runs, task)
    doc_ids = _check_same_examples(runs, task)

    scores = {r.name: {} for r in runs}
    available: list[str] | None = None
    for r in runs:
        names = {k for row in r.samples(task) for k in (row.get("metrics") or {})}
        available = sorted(names) if available is None else [m for m in available if m in names]
    if metrics:
        unknown = [m for m in metrics if m not in (available or [])]
        if unknown:
            raise LlmgenError(f"metric {unknown[0]!r} not in every run's samples for task {task!r}; "
                              f"shared metrics: {', '.join(available or []) or 'none'}")
        available = list(metrics)
    if not available:
        raise LlmgenError(f"runs not comparable: no per-example metric shared by all runs for task {task!r}")

    chosen: list[str] = []
    for m in available:
        per_run = {r.name: per_example(r.samples(task), m) for r in runs}
        if all(len(v) == len(doc_ids) for v in per_run.values()):
            chosen.append(m)
            for name, v in per_run.items():
                scores[name][m] = [v[d] for d in doc_ids]
    if not chosen:
        raise LlmgenError(f"no metric of task {task!r} has a numeric score for every example in every run")

    summaries = {r.name: {m: summarize(scores[r.name][m], seed, n_resamples, confidence) for m in chosen}
                 for r in runs}
    base = runs[0].name
    tests: list[PairedTest] = []
    for r in runs[1:]:
        for m in chosen:
            a, b = scores[base][m], scores[r.name][m]
            boot = paired_bootstrap(b, a, n_resamples=n_resamples, seed=seed, confidence=confidence)
            binary = is_binary(a) and is_binary(b)
            gained = [d for d, x, y in zip(doc_ids, a, b, strict=True) if binary and x == 0 and y == 1]
            lost = [d for d, x, y in zip(doc_ids, a, b, strict=True) if binary and x == 1 and y == 0]
            tests.append(PairedTest(m, base, r.name, boot, mcnemar(b, a) if binary else None, gained, lost))
    rows = {r.name: {row["doc_id"]: row for row in r.samples(task)} for r in runs}
    return Comparison(task, [r.name for r in runs], chosen, len(doc_ids), summaries, tests, rows)
