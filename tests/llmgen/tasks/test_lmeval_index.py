"""The lm-eval task index llmgen builds from its cached catalogue index is lm-eval's own
``TaskManager`` index: same names, kinds, files and tags, built or read from the cache alike, and
a damaged stored index is built again, not trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.tasks.lmeval import _manager  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"


def _view(tm) -> dict:
    return {k: (e.name, e.kind, e.yaml_path, e.tags) for k, e in tm.task_index.items()}


def test_cached_catalogue_index_is_lm_evals_index(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    ref = TaskManager(include_path=[str(EXAMPLES)])
    built = _manager([str(EXAMPLES)])  # indexes the catalogue and stores it
    (stored,) = (tmp_path / "cache" / "lmeval").glob("catalogue-index-*.json")
    read = _manager([str(EXAMPLES)])  # reads the stored index
    for tm in (built, read):
        assert _view(tm) == _view(ref)
        assert (tm.all_tasks, tm.all_subtasks, tm.all_groups, tm.all_tags) == (
            ref.all_tasks, ref.all_subtasks, ref.all_groups, ref.all_tags)
    assert len(ref.all_tasks) > 10000 and "llmgen_capitals_mc" in read.all_tasks and "gsm8k" in read.all_tasks
    # a task from the include folder and one of the catalogue load from the read index as from lm-eval's
    for name in ("llmgen_capitals_mc", "gsm8k"):
        ours = read._entry(name)
        assert ours is not None and ours.yaml_path == ref._entry(name).yaml_path
    docs = list(read.load(["llmgen_capitals_mc"])["tasks"]["llmgen_capitals_mc"].eval_docs)
    assert docs == list(ref.load(["llmgen_capitals_mc"])["tasks"]["llmgen_capitals_mc"].eval_docs)
    # the file is JSON (nothing executed on reading); a damaged one is indexed again, not trusted
    assert isinstance(json.loads(stored.read_text()), list)
    stored.write_text("[[")
    assert _view(_manager([str(EXAMPLES)])) == _view(ref)
    assert stored.read_text() != "[["  # and stored again
