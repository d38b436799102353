"""Answer extraction and normalisation for math problems, on hand-written cases."""

from __future__ import annotations

import pytest

from llmgen.tasks.math_answers import (
    canonical_math_answer,
    extract_answer,
    extract_boxed,
    grade,
    is_equiv,
    to_fraction,
)


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"first \boxed{3} then \boxed{x^{2}+\frac{\sqrt{3}}{2}}", r"x^{2}+\frac{\sqrt{3}}{2}"),
    (r"\boxed 5", "5"),
    (r"\fbox{7}", "7"),
    (r"broken \boxed{1 + {2}", None),
    ("no box here", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"We get \boxed{12}. Check: 3 + 4 = 7", "12"),  # boxed wins over a later number
    ("Natalia sold 48 clips.\n#### 1,234", "1,234"),
    ("The final answer is $42$.", "42"),
    ("Answer: 17", "17"),
    ("I think 3, then 7 apples", "7"),
    ("-3.5 is it", "-3.5"),
    ("no digits at all", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("a, b", [
    ("0.5", r"\frac12"), (r"\dfrac{1}{2}", "1/2"), (r"\tfrac{3}{4}", "0.75"), (r"-\frac{3}{4}", "-0.75"),
    ("1,000", "1000"), ("5.0", "5"), ("5.00", "5"), (r"\$5", "5"), ("$5$", "5"), (r"10\%", "10"),
    ("x = 3", "3"), (r"3\text{ cm}", "3"), (r"90^\circ", "90"), (r"90^{\circ}", "90"),
    (r"\left(1,2\right)", "(1, 2)"), (r"\text{(B)}", "B"), ("-.5", "-1/2"), ("12.", "12"),
    (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt{3}}{2}"), ("4/8", "1/2"),
])
def test_equivalent(a, b):
    assert is_equiv(a, b), (canonical_math_answer(a), canonical_math_answer(b))


@pytest.mark.parametrize("a, b", [
    ("2", "3"), ("1/2", "1/3"), ("(1,234)", "1234"), ("", ""), (None, "1"), ("12", "1.2"),
])
def test_not_equivalent(a, b):
    assert not is_equiv(a, b)


def test_normalize_forms():
    assert canonical_math_answer("1,234,567") == "1234567"
    assert canonical_math_answer(r"\frac{6}{4}") == "3/2"
    assert canonical_math_answer("  7 . ") == "7"
    assert to_fraction(r"\frac{1}{0}") is None
    assert to_fraction("abc") is None


def test_grade():
    assert grade(r"3 + 4 = 7, so \boxed{7}", "7")
    assert grade(" 42", "42.0")
    assert not grade(" 41", "42")


# --- the pass@N reference notebook's grading (allanraventos/refine nbs/eval.ipynb) -----------------

def _nb_last_boxed_only_string(string):
    """The notebook's ``last_boxed_only_string``, written out."""
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    i, right, depth = idx, None, 0
    while i < len(string):
        depth += string[i] == "{"
        depth -= string[i] == "}"
        if string[i] == "}" and depth == 0:
            right = i
            break
        i += 1
    return None if right is None else string[idx: right + 1]


def _nb_remove_boxed(s):
    """The notebook's ``remove_boxed`` (asserts → an exception → the notebook's "")."""
    if "\\boxed " in s:
        assert s[: len("\\boxed ")] == "\\boxed "
        return s[len("\\boxed "):]
    assert s[: len("\\boxed{")] == "\\boxed{" and s[-1] == "}"
    return s[len("\\boxed{"): -1]


def _nb_extracted(res):
    try:
        return _nb_remove_boxed(_nb_last_boxed_only_string(res))
    except Exception:  # the notebook's bare except: TypeError on None, AssertionError on \fbox
        return ""


RESPONSES = [r"so \boxed{\frac{14}{3}}.", r"\boxed{\dfrac{14}{3}}", r"$\boxed{1,000}$", "1000", r"\boxed 5$ apples",
             r"\fbox{7}", r"\boxed{1 + {2}", r"first \boxed{3} then \boxed{x^{2}+\frac{\sqrt{3}}{2}}",
             r"\boxed{\text{(A)}}", r"\boxed{10 \text{ cm}}", r"\boxed{\left( 3, \frac{\pi}{2} \right)}",
             r"\boxed{\frac12}", r"\boxed{0.5}", r"\boxed{an apple}", r"\boxed{90^\circ}", ""]
ANSWERS = [r"\frac{14}{3}", "1000", "5", "7", r"\left( 3, \frac{\pi}{2} \right)", r"\frac{1}{2}", "(A)", "10",
           "90", "apple", "3"]


def test_boxed_grading_is_the_notebooks():
    from llmgen.tasks.math_answers import grade_boxed, last_boxed_answer, normalize_final_answer

    for res in RESPONSES:
        assert (last_boxed_answer(res) or "") == _nb_extracted(res), res
        for ans in ANSWERS:  # the notebook: normalize(answers[i]) == normalize(extracted)
            assert grade_boxed(res, ans) == (normalize_final_answer(ans) == normalize_final_answer(_nb_extracted(res)))
    # hand cases of normalize_final_answer (Lewkowycz et al. 2022, appendix D)
    assert normalize_final_answer(r"\fracab") == r"\frac{a}{b}" and normalize_final_answer(r"\sqrt2") == r"\sqrt{2}"
    assert normalize_final_answer("1,000") == "1000" and normalize_final_answer(r"10 \text{ cm}") == "10"
    assert normalize_final_answer(r"$\left( 3, \frac{\pi}{2} \right)$") == r"(3,\frac{\pi}{2})"
    # exact strings: no numeric equivalence, nothing unboxed (the lenient grade accepts both)
    assert not grade_boxed(r"\boxed{0.5}", r"\frac{1}{2}") and grade(r"\boxed{0.5}", r"\frac{1}{2}")
    assert not grade_boxed("The answer is 1000", "1000") and grade("The answer is 1000", "1000")
    assert grade_boxed(r"$\boxed{1,000}$", "1000") and grade_boxed(r"so \boxed{\frac{14}{3}}.", r"\frac{14}{3}")


def test_recipe_grades_math_data_as_the_notebook_by_default():
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, problem_records
    from llmgen.tasks import math_task
    from llmgen.tasks.math import MathProblem

    assert ConfidenceLimitingConfig(task="math", train_data="a", test_data="b").grading_rule() == "boxed"
    assert ConfidenceLimitingConfig().grading_rule() == "lenient"  # the generated task's answers are unboxed
    assert ConfidenceLimitingConfig(task="math", grading="lenient").grading_rule() == "lenient"
    doc = {"problem": "What is 999 + 1?", "answer": "1000"}
    boxed, lenient = math_task("t", [doc], extract="math_boxed"), math_task("t", [doc])
    assert boxed.is_correct(r" \boxed{1,000}", doc) and not boxed.is_correct(" 1000", doc)
    assert lenient.is_correct(" 1000", doc) and lenient.is_correct(r" \boxed{1,000}", doc)
    p = MathProblem(id="x", problem="What is 999 + 1?", answer="1000")
    assert problem_records([p], boxed=True)[0]["answer"] == r" \boxed{1000}"
    with pytest.raises(Exception, match="grading must be one of boxed, lenient"):
        ConfidenceLimitingConfig(grading="strict").validate()
