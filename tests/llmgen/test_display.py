"""Progress of format searches (exhaustive and bandit) and result tables that keep every name whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from llmgen.backends import get_backend
from llmgen.cache import RequestCache
from llmgen.display import RunProgress, print_table, work_progress
from llmgen.evals.format_spread import max_evaluations
from llmgen.prompts.format_eval import FormatEvaluator, Scorer, search
from llmgen.prompts.formats import Format
from llmgen.recipes.format_spread import split_examples, task_requests
from llmgen.tasks.classification import load_classification_task

FORMATS = [Format(), Format(separator="- ", space=". ", casing="upper"), Format(separator=":: ", casing="lower")]


@pytest.fixture(scope="module")
def small_batches(tiny_model_dir):
    """The tiny model with a forward batch of 4 pairs: a search spans several backend batches."""
    backend = get_backend("hf", tiny_model_dir, batch_size=4)
    yield backend
    backend.close()


def evaluator(backend, n: int = 6) -> FormatEvaluator:
    """Sentiment in three formats, ranked over its two answers, on ``n`` examples."""
    task = load_classification_task("sentiment", 30, 0)
    demos, examples = split_examples(task, 1, n, 0)
    return FormatEvaluator(task_requests(task, FORMATS, demos, examples, "probability_ranking"),
                           Scorer(backend, RequestCache(None), task.name))


def test_exhaustive_search_moves_per_backend_batch_to_formats_x_examples(small_batches, monkeypatch):
    """3 formats x 6 examples x 2 answers = 36 pairs in batches of 4: nine steps of 2 examples each,
    summing to the 18 (format, example) evaluations the bar counts."""
    ev = evaluator(small_batches)
    seen: list[tuple[str, float]] = []

    class Recording(RunProgress):
        def add_task(self, description, **kw):
            seen.append(("total", kw["total"]))
            return super().add_task(description, **kw)

        def advance(self, task, advance=1.0):
            seen.append(("advance", advance))
            super().advance(task, advance)

    monkeypatch.setattr("llmgen.display.RunProgress", Recording)
    info = search(ev, len(FORMATS), 6, budget=None)
    steps = [a for kind, a in seen if kind == "advance"]
    assert seen[0] == ("total", 18) and info["evaluations"] == 18
    assert sum(steps) == pytest.approx(18) and steps.count(2.0) == 9, steps
    assert ev.scorer.on_progress is None  # the hook is the search's only while it runs


def test_bandit_progress_counts_its_pulls_and_ends_complete(small_batches, monkeypatch):
    ev = evaluator(small_batches, n=8)
    advanced: list[float] = []
    finished: list[float] = []

    class Recording(RunProgress):
        def advance(self, task, advance=1.0):
            advanced.append(advance)
            super().advance(task, advance)

        def stop(self):
            finished.append(self.tasks[0].completed / self.tasks[0].total)
            super().stop()

    monkeypatch.setattr("llmgen.display.RunProgress", Recording)
    info = search(ev, len(FORMATS), 8, budget=8, batch=4)
    assert sum(advanced) == pytest.approx(info["evaluations"])  # every pull, the original's included
    assert info["evaluations"] <= max_evaluations(len(FORMATS), 8, 8) == min(3 * 8, 8 + 8 + 16)
    assert finished == [1.0]


def test_max_evaluations_bounds():
    assert max_evaluations(5, 10, None) == 50
    assert max_evaluations(50, 10, 40) == 10 + 40 + 20
    assert max_evaluations(3, 10, 400) == 30


def test_progress_is_on_stderr_and_silent_without_tasks():
    code = ("from llmgen.display import RunProgress, work_progress\n"
            "with RunProgress():\n    pass\n"
            "with work_progress('sentiment: formats x examples', 12) as advance:\n"
            "    advance(5); advance(7)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0 and r.stdout == "", r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sentiment: formats x examples") and "12/12" in lines[0], lines
    assert "left" in lines[0]


def test_disabled_progress_prints_nothing(capsys):
    with work_progress("x", 3, enabled=False) as advance:
        advance(3)
    assert capsys.readouterr() == ("", "")


NAME = "lmeval:" + "a_task_name_long_enough_to_be_cut_" * 3


def results_table() -> Table:
    table = Table(title="model · hf")
    for col in ("task", "metric", "value", "± stderr", "95% CI", "n"):
        table.add_column(col)
    table.add_row(NAME, "acc_norm", "0.5", "0.1", "[0.300, 0.700]", "40")
    return table


def test_rich_alone_cuts_a_long_name_at_a_pipes_width():
    """The premise: printed as is at 80 columns, the name is not whole on any line."""
    out = io.StringIO()
    Console(file=out, width=80).print(results_table())
    assert not any(NAME in line for line in out.getvalue().splitlines())


@pytest.mark.parametrize("width", [40, 80, 200])
def test_tables_never_cut_a_name(width):
    """At any console width (a pipe's is 80), every cell is printed whole on its row's one line."""
    out = io.StringIO()
    print_table(results_table(), Console(file=out, width=width))
    row = next(line for line in out.getvalue().splitlines() if "acc_norm" in line)
    assert NAME in row and "[0.300, 0.700]" in row and "…" not in out.getvalue()


def test_eval_table_on_a_pipe_keeps_the_task_name(tmp_path, tiny_model_dir):
    """``llmgen eval`` with stdout a pipe (rich's width: 80): a long task-file name stays whole."""
    name = "a_long_task_file_name_that_does_not_fit_beside_the_metric_columns_in_80"
    task = Path(tmp_path / f"{name}.jsonl")
    task.write_text('{"prompt": "1+1=", "target": "2"}\n')
    r = subprocess.run([sys.executable, "-m", "llmgen.cli.main", "eval", "--model", tiny_model_dir, "--backend", "hf",
                        "--tasks", str(task), "--max-tokens", "2", "--output-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert r.returncode == 0, r.stderr
    assert any(name in line and "exact_match" in line for line in r.stdout.splitlines()), r.stdout
    assert Path(r.stderr.splitlines()[-1].split()[-1]).name == "results.json"
