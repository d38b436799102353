"""The Task type's filters and metrics (hand-computed cases, lm-eval's formulas) and every loader path."""

from __future__ import annotations

import json
import math

import pytest

from llmgen.errors import LlmgenError
from llmgen.tasks import (
    METRICS,
    Scored,
    Task,
    apply_filters,
    bits_per_byte,
    build_filters,
    get_task,
    task_from_yaml,
    weighted_perplexity,
)


def run_filters(spec, responses):
    return apply_filters(build_filters(spec), list(responses))


# --- filters -----------------------------------------------------------------------------------

def test_regex_group_select_and_fallback():
    last = [{"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": -1}]
    assert run_filters(last, ["44 + 1 = 45", "no number", "-3 then 7"]) == ["45", "[invalid]", "7"]
    first = [{"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": 0}]
    assert run_filters(first, ["44 + 1 = 45"]) == ["44"]
    # several groups: the first non-empty group of the selected match (lm-eval's rule), stripped
    two = [{"function": "regex", "regex_pattern": r"#### (\d+)|answer is (\d+)", "fallback": "none"}]
    assert run_filters(two, ["so the answer is 12", "#### 7", "nothing"]) == ["12", "7", "none"]
    assert run_filters([{"function": "regex", "regex_pattern": "(x)", "group_select": 5}], ["x x"]) == ["[invalid]"]


def test_take_first_majority_vote_and_number_filters():
    assert run_filters(["first_number", "take_first"], ["a 3 b 4", "5"]) == ["3"]
    assert run_filters(["last_number", "majority_vote"], ["1, 2", "is 2", "3", "0 then 3", "x 3"]) == ["3"]
    assert run_filters("first_number", ["1,234.0 apples", "none"]) == ["1234", ""]
    assert run_filters("last_number", ["-2 and -7.5"]) == ["-7.5"]
    assert run_filters("strip", ["  Paris. "]) == ["Paris"]
    assert run_filters("math", ["so $\\boxed{\\frac{1}{2}}$"]) == run_filters("math_normalize", ["\\frac{1}{2}"])
    with pytest.raises(LlmgenError, match="unknown filter 'nope'"):
        build_filters(["nope"])
    with pytest.raises(LlmgenError, match="bad regex_pattern"):
        build_filters([{"function": "regex", "regex_pattern": "("}])


def test_generation_scoring_last_number_vs_first_number():
    """The issue's case: `44 + 1 = 45` is right under lm-eval's last-number filter, wrong under first_number."""
    doc = {"question": "What is 44 + 1?", "target": "45"}
    last = Task(name="t", docs=[doc], extract=[{"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": -1}])
    assert last.is_correct(" 44 + 1 = 45", doc)
    assert not Task(name="t", docs=[doc], extract="first_number").is_correct(" 44 + 1 = 45", doc)
    # majority vote over 3 samples: exact_match scores the vote, pass@k the samples
    voted = Task(name="t", docs=[doc], extract=["last_number", "majority_vote"], metrics=("exact_match", "pass@k"))
    s = voted.score_generation(doc, ["= 45", "= 44", "so 45"])
    assert s.predictions == ["45"] and s.correct == [True, False, True]
    assert voted.score(doc, s) == {"exact_match": 1.0}


def test_gsm8k_style_target_extraction():
    doc = {"question": "q", "answer": "She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"}
    task = Task(name="t", docs=[doc], target_key="answer", extract="last_number",
                target_extract=[{"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"}, "first_number"])
    assert task.gold_answer(doc) == "18"
    assert task.is_correct("9 * 2 = 18 dollars.", doc) and not task.is_correct("9", doc)


# --- choice metrics: acc, acc_norm (characters), acc_bytes (UTF-8 bytes), as lm-eval 0.4.13 -----

def test_choice_metrics_hand_computed():
    # choices of 1, 6 and 3 characters (3 chars but 6 bytes for "ééé"); gold = index 1
    s = Scored(choice_logprobs=[-2.0, -6.0, -9.0], choices=["a", "bbbbbb", "ééé"], gold_index=1)
    assert METRICS.get("acc").score(s) == 0.0  # argmax(lls) = 0
    assert METRICS.get("acc_norm").score(s) == 1.0  # -2/1, -6/6 = -1, -9/3 = -3 → index 1
    # chars and bytes disagree: chars -2/1, -7/6, -5/3 → index 1; bytes -2/1, -7/6, -5/6 → index 2 (gold)
    s2 = Scored(choice_logprobs=[-2.0, -7.0, -5.0], choices=["a", "bbbbbb", "ééé"], gold_index=2)
    assert METRICS.get("acc").score(s2) == 0.0
    assert METRICS.get("acc_norm").score(s2) == 0.0
    assert METRICS.get("acc_bytes").score(s2) == 1.0


def test_gold_as_index_or_text_checked_at_load(tmp_path):
    docs = [{"q": "x", "options": ["no", "yes"], "label": 1}, {"q": "y", "options": ["no", "yes"], "label": "no"},
            {"q": "z", "options": ["no", "yes"], "label": "0"}]
    task = Task(name="t", docs=docs, template="{q}", target_key="label", output_type="multiple_choice",
                choices_key="options", metrics=("acc",))
    assert [task.gold_index(d) for d in docs] == [1, 0, 0]
    assert task.target_of(docs[0]) == "yes"
    with pytest.raises(LlmgenError, match="example 0 target index 2 is out of range for 2 choices"):
        Task(name="t", docs=[{"q": "x", "options": ["a", "b"], "label": 2}], template="{q}", target_key="label",
             output_type="multiple_choice", choices_key="options", metrics=("acc",))
    with pytest.raises(LlmgenError, match="target 'c' is not among its choices"):
        Task(name="t", docs=[{"q": "x", "options": ["a", "b"], "label": "c"}], template="{q}", target_key="label",
             output_type="multiple_choice", choices_key="options", metrics=("acc",))
    with pytest.raises(LlmgenError, match="must be a non-empty list"):
        Task(name="t", docs=[{"q": "x", "options": "ab", "label": 0}], template="{q}", target_key="label",
             output_type="multiple_choice", choices_key="options", metrics=("acc",))
    # the same from a YAML file: fails at load, before any model
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "x", "label": 3}) + "\n")
    (tmp_path / "t.yaml").write_text("data: d.jsonl\ntemplate: '{q}'\ntarget: label\nchoices: [no, yes]\n")
    with pytest.raises(LlmgenError, match="target index 3 is out of range"):
        task_from_yaml(tmp_path / "t.yaml")


def test_unknown_metric_for_output_type():
    with pytest.raises(LlmgenError, match="unknown metric 'acc' for generate"):
        Task(name="t", docs=[{"question": "q", "target": "a"}], metrics=("acc",))


# --- perplexity aggregates: lm-eval's weighted_perplexity and bits_per_byte --------------------

def test_perplexity_aggregates_hand_computed():
    items = [(-10.0, 4), (-6.0, 4)]
    assert weighted_perplexity(items) == pytest.approx(math.exp(2.0))
    assert bits_per_byte(items) == pytest.approx(2.0 / math.log(2))
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    assert weighted_perplexity(items) == pytest.approx(lm_metrics.weighted_perplexity(items))
    assert bits_per_byte(items) == pytest.approx(lm_metrics.bits_per_byte(items))


def test_rolling_task_on_tiny_model(tmp_path, tiny_model_dir):
    from llmgen.backends import get_backend
    from llmgen.evaluate import EvalConfig, run_eval

    texts = ["the cat sat on the mat", "one two  three\nfour"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "ppl.yaml").write_text("name: ppl\ndata: p.jsonl\noutput_type: loglikelihood_rolling\ntarget: text\n")
    backend = get_backend("hf", tiny_model_dir)
    try:
        out = run_eval(EvalConfig(model=tiny_model_dir, tasks=[str(tmp_path / "ppl.yaml")], cache=None),
                       backend=backend, show_progress=False)
        lls = [r.logprob for r in backend.loglikelihood_rolling(texts)]
    finally:
        backend.close()
    words, nbytes = [6, 4], [len(t.encode()) for t in texts]  # re.split(r"\s+") and UTF-8 bytes
    res = out["results"]["ppl"]
    assert res["word_perplexity"] == pytest.approx(math.exp(-sum(lls) / sum(words)), rel=1e-6)
    assert res["byte_perplexity"] == pytest.approx(math.exp(-sum(lls) / sum(nbytes)), rel=1e-6)
    assert res["bits_per_byte"] == pytest.approx(-sum(lls) / sum(nbytes) / math.log(2), rel=1e-6)
    assert [r["words"] for r in out["samples"]] == words


# --- prompts: few-shot sampler, system prompt, multi-turn --------------------------------------

def _qa_docs(n):
    return [{"question": f"q{i}", "target": f"a{i}"} for i in range(n)]


def test_seeded_fewshot_sampler():
    pool = _qa_docs(10)
    task = Task(name="t", docs=pool[:4], fewshot_docs=pool, num_fewshot=3, fewshot_sampler="random", fewshot_seed=7)
    first = [task.demonstrations(d, 3, i) for i, d in enumerate(task.docs)]
    assert first == [task.demonstrations(d, 3, i) for i, d in enumerate(task.docs)]  # deterministic
    assert all(len(x) == 3 and task.docs[i] not in x for i, x in enumerate(first))  # never the document itself
    other = Task(name="t", docs=pool[:4], fewshot_docs=pool, num_fewshot=3, fewshot_sampler="random", fewshot_seed=8)
    assert [other.demonstrations(d, 3, i) for i, d in enumerate(other.docs)] != first
    plain = Task(name="t", docs=pool[:1], fewshot_docs=pool, num_fewshot=2)
    assert plain.demonstrations(pool[0], 2) == pool[:2]
    with pytest.raises(LlmgenError, match="num_fewshot must be >= 0"):
        plain.build_prompt(pool[0], num_fewshot=-2)


def test_system_prompt_and_multiturn_messages():
    pool = _qa_docs(3)
    task = Task(name="t", docs=pool[2:], fewshot_docs=pool[:2], num_fewshot=2, system_prompt="Be brief.",
                instruction="Answer.", fewshot_as_multiturn=True)
    doc = pool[2]
    assert task.build_prompt(doc) == "Be brief.\n\nAnswer.\n\nQuestion: q0\nAnswer: a0\n\nQuestion: q1\nAnswer: a1\n\nQuestion: q2\nAnswer:"
    assert task.build_messages(doc) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Answer.\n\nQuestion: q0\nAnswer:"}, {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "Question: q1\nAnswer:"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "Question: q2\nAnswer:"}]
    single = Task(name="t", docs=pool[2:], fewshot_docs=pool[:2], num_fewshot=1, system_prompt="Be brief.")
    assert single.build_messages(doc) == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Question: q0\nAnswer: a0\n\nQuestion: q2\nAnswer:"}]


# --- YAML errors -------------------------------------------------------------------------------

def test_yaml_syntax_error_names_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ndata: d.jsonl\ntarget: [a, b\nmetric: exact_match\n")
    with pytest.raises(LlmgenError, match=r"malformed YAML in .*bad.yaml line \d+ column \d+"):
        get_task(str(tmp_path / "bad.yaml"))
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(LlmgenError, match="is not UTF-8 text"):
        get_task(str(tmp_path / "latin1.yaml"))
