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
        """The run's ``samples.jsonl`` (one file for every task, rows tagged by ``task``), if written."""
        plain = self.path / "samples.jsonl"
        return plain if plain.is_file() else None

    def samples(self, task: str) -> list[dict]:
        """The per-example rows of one task (rows of other tasks in a shared file are left out)."""
        if task not in self._samples:
            path = self.samples_path(task)
            if path is None:
                raise LlmgenError(f"run {self.path} has no per-example samples (samples.jsonl) for task {task!r}")
            rows = [r for r in read_jsonl(path, required=["task", "doc_id", "metrics"]) if r["task"] == task]
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


# ------------------------------------------------------------------ comparisons across prompt formats
@dataclass
class FormatTest:
    """One prompt format: the paired difference ``other - baseline`` on the shared examples."""

    format_id: int
    format: str
    original: bool
    bootstrap: PairedBootstrapResult
    mcnemar: McNemarResult | None

    @property
    def significant(self) -> int:
        """+1 if the other run is significantly ahead (interval above 0), -1 if behind, 0 otherwise."""
        if self.bootstrap.ci_low > 0:
            return 1
        if self.bootstrap.ci_high < 0:
            return -1
        return 0


@dataclass
class FormatComparison:
    """``llmgen compare`` on two ``--formats`` runs: one paired test per format, and the ranking across them.

    FormatSpread's point (Sclar et al. 2024) is that the ranking of two models can reverse with the
    prompt format; ``flips`` counts the format pairs in which the two models are ordered oppositely.
    """

    task: str
    metric: str
    baseline: str
    other: str
    n_examples: int
    tests: list[FormatTest]

    @property
    def signs(self) -> list[int]:
        """Per format: +1 if the other run scores higher, -1 if lower, 0 if tied."""
        return [(t.bootstrap.diff > 0) - (t.bootstrap.diff < 0) for t in self.tests]

    @property
    def flips(self) -> int:
        return ranking_flips(self.signs)

    def as_dict(self) -> dict[str, Any]:
        k = len(self.tests)
        return {"task": self.task, "metric": self.metric, "baseline": self.baseline, "other": self.other,
                "n_examples": self.n_examples, "formats": k,
                "other_significantly_better": sum(t.significant == 1 for t in self.tests),
                "baseline_significantly_better": sum(t.significant == -1 for t in self.tests),
                "other_ahead": self.signs.count(1), "baseline_ahead": self.signs.count(-1), "tied": self.signs.count(0),
                "ranking_flips": self.flips, "format_pairs": k * (k - 1) // 2,
                "per_format": [{"format_id": t.format_id, "format": t.format, "original": t.original,
                                "bootstrap": t.bootstrap.as_dict(), "significant": t.significant,
                                "mcnemar": t.mcnemar.as_dict() if t.mcnemar else None} for t in self.tests]}


def ranking_flips(signs: list[int]) -> int:
    """Format pairs in which the two models are ordered oppositely (one +1, the other -1; ties never flip)."""
    return signs.count(1) * signs.count(-1)


def _format_entry(run: Run, task: str) -> dict[str, Any] | None:
    fs = run.results.get("format_spread")
    entry = fs.get(task) if isinstance(fs, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("formats"), list) else None


def _format_rows(run: Run, task: str) -> dict[int, dict[int, dict]]:
    """``format_id -> doc_id -> row`` from the run's ``format_samples.jsonl`` (rows of ``task`` only)."""
    path = run.path / "format_samples.jsonl"
    if not path.is_file():
        raise LlmgenError(f"run {run.name} has no format_samples.jsonl: rerun it with --formats and --log-samples")
    out: dict[int, dict[int, dict]] = {}
    for row in read_jsonl(path, required=["format_id", "doc_id", "metrics"]):
        if row.get("task", task) == task:
            out.setdefault(int(row["format_id"]), {})[row["doc_id"]] = row
    return out


def has_formats(path: str | Path, task: str) -> bool:
    """True when the run folder is a ``--formats`` run of ``task``."""
    return _format_entry(load_run(path), task) is not None


def compare_formats(paths: list[str | Path], task: str | None = None, metric: str | None = None, seed: int = 0,
                    n_resamples: int = 10_000, confidence: float = 0.95) -> FormatComparison:
    """Two ``--formats`` runs of the same task and formats: a paired test per format (second run - first).

    Only formats fully evaluated in both runs count (the bandit evaluates some on part of the
    examples). The runs must have the same formats (same templates, in the same order) and, per
    format, the same examples with the same targets.
    """
    if len(paths) != 2:
        raise LlmgenError(f"a comparison across formats needs exactly two runs, got {len(paths)}")
    runs = [load_run(p) for p in paths]
    if runs[0].path.resolve() == runs[1].path.resolve():
        raise LlmgenError("compare got the same run folder twice")
    _unique_names(runs)
    task = common_task(runs, task)
    entries = [_format_entry(r, task) for r in runs]
    for r, e in zip(runs, entries, strict=True):
        if e is None:
            raise LlmgenError(f"run {r.name} is not a --formats run of task {task!r} (no format_spread in results.json)")
    templates = [[f.get("format") for f in e["formats"]] for e in entries]
    if templates[0] != templates[1]:
        raise LlmgenError(f"runs not comparable across formats: {runs[0].name} and {runs[1].name} evaluated different "
                          f"formats of task {task!r} (rerun with the same --formats and --seed)")
    rows = [_format_rows(r, task) for r in runs]
    evaluated = [{f["format_id"] for f in e["formats"] if f.get("evaluated", True)} for e in entries]
    shared = [f for f in entries[0]["formats"]
              if all(f["format_id"] in ev for ev in evaluated) and all(f["format_id"] in rs for rs in rows)]
    if not shared:
        raise LlmgenError(f"no format of task {task!r} was fully evaluated in both runs")
    known = [m for m in runs[0].results["results"][task] if m in runs[1].results["results"][task]]
    if metric is None and known:
        metric = known[0]
    if metric not in known:
        raise LlmgenError(f"metric {metric!r} not in both runs' results for task {task!r}; "
                          f"shared metrics: {', '.join(known) or 'none'}")
    tests: list[FormatTest] = []
    n_examples = 0
    for f in shared:
        fid = f["format_id"]
        a_rows, b_rows = rows[0][fid], rows[1][fid]
        if set(a_rows) != set(b_rows):
            raise LlmgenError(f"runs not comparable: format {fid} of task {task!r} has different example sets")
        doc_ids = sorted(a_rows)
        for d in doc_ids:
            if a_rows[d].get("target") != b_rows[d].get("target"):
                raise LlmgenError(f"runs not comparable: example {d} of task {task!r} has a different target")
        a = per_example(list(a_rows.values()), metric)
        b = per_example(list(b_rows.values()), metric)
        if len(a) != len(doc_ids) or len(b) != len(doc_ids):
            raise LlmgenError(f"metric {metric!r} has no numeric score for every example of format {fid}")
        xa, xb = [a[d] for d in doc_ids], [b[d] for d in doc_ids]
        boot = paired_bootstrap(xb, xa, n_resamples=n_resamples, seed=seed, confidence=confidence)
        mc = mcnemar(xb, xa) if is_binary(xa) and is_binary(xb) else None
        tests.append(FormatTest(fid, str(f.get("format", "")), bool(f.get("original")), boot, mc))
        n_examples = len(doc_ids)
    return FormatComparison(task, metric, runs[0].name, runs[1].name, n_examples, tests)
