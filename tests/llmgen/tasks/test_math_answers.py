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
