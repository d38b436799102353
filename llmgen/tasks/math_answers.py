"""Extracting and comparing final answers of math problems.

A model's answer is graded by what it *ends* on: the last ``\\boxed{...}`` (MATH convention), else a
``#### 42`` line (GSM8K) or "the final answer is 42", else the last number in the text. Answers are
then normalised (dollar signs, spaces, ``\\left``/``\\right``, ``\\dfrac``, thousands commas, trailing
``.0``, units in ``\\text{}``, ...) and compared exactly as numbers when both sides parse as
rationals, so ``1/2``, ``\\frac{1}{2}``, ``0.5`` and ``\\frac12`` all match, and as normalised
strings otherwise.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx`` (nested braces allowed), or None."""
    depth = 0
    for i in range(open_idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``), braces balanced."""
    best: tuple[int, str] | None = None
    for cmd in _BOX_COMMANDS:
        start = text.rfind(cmd)
        while start >= 0:
            rest = start + len(cmd)
            content: str | None = None
            if rest < len(text) and text[rest] == "{":
                end = _matching_brace(text, rest)
                if end is not None:
                    content = text[rest + 1 : end]
            elif rest < len(text) and text[rest] == " ":
                m = re.match(r" +([^\s$]+)", text[rest:])
                content = m.group(1) if m else None
            if content is not None:
                if best is None or start > best[0]:
                    best = (start, content)
                break
            start = text.rfind(cmd, 0, start)
    return None if best is None else best[1].strip()


def extract_answer(text: str) -> str | None:
    """The final answer in a model output or a reference solution, or None if there is none."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    m = re.findall(r"####\s*([^\n]+)", text)
    if m:
        return m[-1].strip()
    m = re.findall(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*\$?([^\n$]+?)\$?\s*(?:\.\s*)?(?:\n|$)",
                   text, flags=re.IGNORECASE)
    if m:
        return m[-1].strip()
    nums = re.findall(_NUMBER, text)
    return nums[-1] if nums else None


def _strip_text_commands(s: str) -> str:
    # \text{ cm} and \mbox{...} are units or words: drop them; \text{(A)} keeps its content.
    s = re.sub(r"\\(?:text|mbox|textbf|mathrm)\{\s*\(([A-Za-z])\)\s*\}", r"\1", s)
    s = re.sub(r"\\(?:mbox)\{[^{}]*\}", "", s)
    s = re.sub(r"(?<=\d)\s*\\text\{[^{}]*\}", "", s)
    return re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", s)


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` → ``\frac{1}{2}``, ``\frac1{2}`` → ``\frac{1}{2}``."""
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    return re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)


def canonical_math_answer(answer: str | None) -> str:
    """A canonical string for an answer; equal strings mean equal answers."""
    if answer is None:
        return ""
    s = str(answer).strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _strip_text_commands(s)
    s = s.strip().rstrip(".").strip()
    # "x = 5" or "k=5" → "5" (a single short variable name on the left only)
    m = re.fullmatch(r"[A-Za-z]{1,2}\s*=\s*(.+)", s)
    if m:
        s = m.group(1)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # 1,000,000 → 1000000, but (1,234) stays a pair
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    if s.startswith("."):
        s = "0" + s
    if s.startswith("-."):
        s = "-0" + s[1:]
    value = to_fraction(s)
    if value is not None:
        return _format_fraction(value)
    return s


def to_fraction(s: str) -> Fraction | None:
    r"""Exact value of an integer, decimal, ``a/b`` or ``\frac{a}{b}`` (optionally negative), else None."""
    s = s.strip().replace(" ", "")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m:
        num, den = Fraction(m.group(2)), Fraction(m.group(3))
        if den == 0:
            return None
        return -num / den if m.group(1) else num / den
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s)
    if m:
        den = Fraction(m.group(2))
        return None if den == 0 else Fraction(m.group(1)) / den
    if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s):
        return Fraction(s)
    return None


def _format_fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def is_equiv(predicted: str | None, reference: str | None) -> bool:
    """Whether two final answers are the same after normalisation (exact rational comparison)."""
    if predicted is None or reference is None:
        return False
    a, b = canonical_math_answer(predicted), canonical_math_answer(reference)
    return bool(a) and a == b


def grade(output: str, reference_answer: str) -> bool:
    """Extract the final answer from a model ``output`` and compare it with the reference answer."""
    return is_equiv(extract_answer(output), reference_answer)


# --- the pass@N reference's grading (allanraventos/refine nbs/eval.ipynb) ---------------------------
# A response counts when its last \boxed{...} answer equals the reference answer after
# ``normalize_final_answer`` (Lewkowycz et al. 2022, appendix D, as the notebook has it): exact string
# equality, no numeric equivalence, nothing read from an unboxed response. ``grade`` above is the
# lenient option (any final-answer form, the last number, rationals compared as numbers).

_NB_SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
                     (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"))
_NB_REMOVED = (r"\left", r"\right", "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km",
               "units", "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
               "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}",
               "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}",
               r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots")


def normalize_final_answer(answer: str) -> str:
    r"""The notebook's ``normalize_final_answer``: ``\text{x}`` → x, its substitutions and removed
    expressions in its order, ``\fracab`` → ``\frac{a}{b}``, ``\sqrta`` → ``\sqrt{a}``, no ``$``, and
    digit-only answers without thousands commas."""
    s = re.sub(r"\\text{(.*?)}", r"\1", answer)
    for before, after in _NB_SUBSTITUTIONS:
        s = s.replace(before, after)
    for expr in _NB_REMOVED:
        s = s.replace(expr, "")
    s = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", s)
    s = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", s)
    s = s.replace("$", "")
    if s.replace(",", "").isdigit():
        s = s.replace(",", "")
    return s


def last_boxed_answer(text: str) -> str | None:
    r"""The notebook's ``remove_boxed(last_boxed_only_string(text))``: the content of the last
    ``\boxed{...}`` (braces balanced), or what follows ``\boxed `` up to a ``$``; None where the
    notebook's extraction fails (no box, an unclosed one, an ``\fbox``)."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        return None  # the notebook falls back to \fbox, which remove_boxed then refuses
    end = _matching_brace(text, text.find("{", idx)) if "{" in text[idx:] else None
    boxed = text[idx: end + 1] if end is not None else None
    if boxed is None or not boxed.startswith("\\boxed{"):
        return None
    return boxed[len("\\boxed{"):-1]


def grade_boxed(output: str, reference_answer: str) -> bool:
    """The notebook's test: normalize_final_answer(reference) == normalize_final_answer(last boxed
    answer of ``output``), an unreadable box standing for the empty answer as in the notebook."""
    return normalize_final_answer(reference_answer) == normalize_final_answer(last_boxed_answer(output) or "")


GRADINGS = {"boxed": grade_boxed, "lenient": grade}  # the notebook's (default for MATH data), llmgen's own
