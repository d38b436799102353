"""What a user sees and what stays on disk: listing commands write nothing, nothing spawned prints
to the terminal, progress goes to stderr, result tables keep every name whole on a pipe.

Every command runs in a subprocess from a folder outside any git checkout, as a user's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"

LISTING = [["--help"], ["tasks"], ["tasks", "--filter", "tofu"], ["models"], ["eval", "--help"], ["train", "--help"],
           ["format-spread", "--help"], ["npo-unlearning", "--help"], ["confidence-limiting", "--help"],
           ["hyperfitting", "--help"], ["instruction-diversity", "sweep", "--help"]]


def outside(tmp_path: Path, **env: str) -> dict[str, str]:
    """An environment in which git finds no checkout at or above ``tmp_path``, and an empty cache."""
    # the quiet switches an in-process CLI call of another test may have left in this process's environment
    quiet = {"TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS",
             "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "VLLM_LOGGING_LEVEL", "TORCH_CPP_LOG_LEVEL"}
    base = {k: v for k, v in os.environ.items() if k not in quiet}
    return {**base, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent), "LLMGEN_CACHE": str(tmp_path / "cache"), **env}


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(LLMGEN + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_listing_commands_write_nothing(tmp_path):
    """``llmgen tasks`` used to write the synthetic TOFU set into the cache (building tofu_* to list it)."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    env = outside(tmp_path)
    for args in LISTING:
        r = run(args, work, env)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stderr == "", (args, r.stderr)
        assert not any(cache.iterdir()) and not any(work.iterdir()), (args, list(cache.rglob("*")), list(work.rglob("*")))
    tasks = run(["tasks", "--filter", "tofu_forget"], work, env).stdout
    assert "tofu_forget01" in tasks and "TOFU evaluation, forget split forget01" in tasks


def test_the_listed_tofu_task_is_what_it_builds(tmp_path, monkeypatch):
    """The listing's description of a tofu_* task matches the built task's output type and metrics."""
    from llmgen.tasks import TASKS, get_task, list_tasks

    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path))
    assert "tofu_forget05" in list_tasks()
    kind, metrics, _ = TASKS.get("tofu_forget05").listing
    built = get_task("tofu_forget05")
    assert (kind, tuple(metrics)) == (built.output_type, tuple(built.metrics))
    assert (tmp_path / "tofu-synthetic").is_dir()  # building (not listing) materialises the set


def lmeval_task(folder: Path, name: str) -> None:
    """A copy of the multiple-choice example task whose data path is absolute (usable from any folder)."""
    folder.mkdir()
    data = folder / "capitals.jsonl"
    data.write_text((EXAMPLES / "data" / "capitals.jsonl").read_text())
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files: {data}\ntest_split: train\n"
        "output_type: multiple_choice\ndoc_to_text: \"The capital of {{country}} is\"\n"
        "doc_to_choice: \"{{options}}\"\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n")


def test_an_lmeval_run_outside_a_checkout_prints_only_its_own_lines(tmp_path, tiny_model_dir):
    """lm-eval runs ``git describe`` with the terminal as stderr: outside a checkout that printed
    "fatal: not a git repository". Its progress bars (tqdm, datasets) are library noise too. The
    task name is longer than a pipe's 80 columns allow beside the other columns: the table keeps it."""
    pytest.importorskip("lm_eval")
    name = "pkg_quiet_capitals_task_with_a_name_long_enough_to_be_cut_in_eighty_columns"
    work = tmp_path / "work"
    work.mkdir()
    lmeval_task(tmp_path / "tasks", name)
    assert subprocess.run(["git", "rev-parse"], cwd=work, env=outside(tmp_path), capture_output=True).returncode != 0
    r = run(["eval", "--model", tiny_model_dir, "--backend", "hf", "--tasks", f"lmeval:{name}", "--include-path",
             str(tmp_path / "tasks"), "--limit", "3", "--output-dir", str(work / "run")], work, outside(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "fatal" not in r.stderr and "git" not in r.stderr, r.stderr
    assert r.stderr.splitlines() == [f"wrote {work / 'run'}/results.json"], r.stderr
    assert f"lmeval:{name}" in r.stdout, r.stdout  # whole, on one line
    assert json.loads((work / "run" / "results.json").read_text())["results"][f"lmeval:{name}"]["acc"] >= 0


def test_verbose_shows_library_logs(tmp_path, tiny_model_dir):
    """The quiet default hides library output; ``--verbose`` lets it through (tqdm bars included)."""
    pytest.importorskip("lm_eval")
    name = "pkg_verbose_capitals"
    lmeval_task(tmp_path / "tasks", name)
    r = run(["--verbose", "eval", "--model", tiny_model_dir, "--backend", "hf", "--tasks", f"lmeval:{name}",
             "--include-path", str(tmp_path / "tasks"), "--limit", "2", "--output-dir", str(tmp_path / "run")],
            tmp_path, outside(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.splitlines()) > 1 and "it/s]" in r.stderr, r.stderr
