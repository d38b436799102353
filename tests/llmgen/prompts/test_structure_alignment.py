"""Aligning rendered prompts to their documents' values (``llmgen.prompts.structure``) on real LogiQA
rows (bench/data/logiqa_test.jsonl, lgw863/LogiQA-dataset) rendered by lm-eval's own Python
``doc_to_text``: a document whose option texts are the enumeration's own labels (``A.``, ``B.``)
aligns differently, yet shares the task's skeleton because that skeleton reproduces its prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.prompts.structure import aligned_skeleton, fills, same_skeleton

pytest.importorskip("lm_eval")
from lm_eval.tasks.logiqa.utils_logiqa import doc_to_text  # noqa: E402

ROWS = Path(__file__).resolve().parents[3] / "bench" / "data" / "logiqa_test.jsonl"


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = [json.loads(x) for x in ROWS.read_text(encoding="utf-8").splitlines()]
    assert rows[4]["options"][:3] == ["A.", "B.", "C."]  # the row whose options spell the labels
    return rows[:6]


def test_a_document_aligned_otherwise_shares_the_skeleton_that_renders_it(docs):
    texts = [doc_to_text(d) for d in docs]
    skeletons = [aligned_skeleton(t, d) for t, d in zip(texts, docs, strict=True)]
    with pytest.raises(LlmgenError, match="document 0 has .* where document 4 has"):
        same_skeleton(skeletons)  # the skeletons alone disagree
    shared = same_skeleton(skeletons, texts, docs)
    assert shared == skeletons[0]
    assert all(fills(shared, t, d) for t, d in zip(texts, docs, strict=True))


def test_the_skeleton_is_the_majoritys_and_a_real_difference_is_still_refused(docs):
    texts = [doc_to_text(d) for d in docs]
    order = [4, *range(4), 5]  # the odd document first: the others still decide the skeleton
    skeletons = [aligned_skeleton(texts[i], docs[i]) for i in order]
    assert same_skeleton(skeletons, [texts[i] for i in order], [docs[i] for i in order]) == skeletons[1]
    changed = [*texts[:5], texts[5].replace("\nChoices:\n", "\nOptions:\n")]
    with pytest.raises(LlmgenError, match="document 0 has .* where document 5 has"):
        same_skeleton([aligned_skeleton(t, d) for t, d in zip(changed, docs, strict=True)], changed, docs)
