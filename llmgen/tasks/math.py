"""Math problems with checkable answers: a MATH-format loader and a generated offline task.

The generated task exists so the pass@N recipe runs without a network: multi-step arithmetic word
problems and linear equations with exact integer answers. ``difficulty`` sets the number of steps
(and the size of the equations' numbers). The train/test side of a problem is a hash of its text
(:func:`is_test_problem`), so the eval tasks ``math_generated_d*`` and the recipe's training set
never share a problem.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_json, read_jsonl
from llmgen.tasks.base import Task
from llmgen.tasks.math_answers import extract_boxed


@dataclass
class MathProblem:
    """One problem: statement, worked solution (may be empty) and final answer."""

    problem: str
    answer: str
    solution: str = ""
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- prompt formats ------------------------------------------------------------------------------

def direct_prompt(problem: MathProblem | str) -> str:
    """Prompt for a direct answer (no chain of thought): the answer follows ``Answer:``."""
    text = problem.problem if isinstance(problem, MathProblem) else problem
    return f"Problem: {text}\nAnswer:"


def direct_target(problem: MathProblem) -> str:
    """The training target of a direct-answer prompt (a leading space, then the answer)."""
    return f" {problem.answer}"




# --- MATH-format loader --------------------------------------------------------------------------

def _row_to_problem(row: dict[str, Any], where: str) -> MathProblem:
    problem = row.get("problem", row.get("question"))
    if not isinstance(problem, str) or not problem.strip():
        raise LlmgenError(f"{where}: missing field 'problem'")
    solution = row.get("solution") or ""
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        answer = extract_boxed(solution) if solution else None
        if answer is None:
            raise LlmgenError(f"{where}: no 'answer' field and no \\boxed{{}} answer in the solution")
    meta = {k: v for k, v in row.items() if k not in ("problem", "question", "solution", "answer", "id")}
    return MathProblem(problem=problem, answer=str(answer), solution=solution,
                       id=str(row.get("id", row.get("unique_id", ""))), meta=meta)


def _rows_from_json(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise LlmgenError(f"{path}: expected a problem object or a list of them")
    return data


def load_math(path: str | Path, split: str = "test", limit: int | None = None) -> list[MathProblem]:
    """Load MATH-format problems from a JSON/JSONL file, a folder of them (the original MATH
    layout ``split/subject/N.json``), or a ``datasets.save_to_disk`` folder.

    The answer is the ``answer`` field, or else the last ``\\boxed{}`` of the solution.
    """
    path = Path(path)
    if not path.exists():
        raise LlmgenError(f"MATH data not found: {path}")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.is_file():
        raw = read_jsonl(path, required=[]) if path.suffix == ".jsonl" else _rows_from_json(path)
        rows = [(f"{path} row {i + 1}", r) for i, r in enumerate(raw)]
    elif any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise LlmgenError(f"{path} has no split {split!r} (has: {', '.join(ds)})")
            ds = ds[split]
        rows = [(f"{path} row {i + 1}", dict(r)) for i, r in enumerate(ds)]
    else:
        base = path / split if (path / split).is_dir() else path
        files = sorted(p for p in base.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise LlmgenError(f"no .json or .jsonl files under {base}")
        for f in files:
            raw = read_jsonl(f) if f.suffix == ".jsonl" else _rows_from_json(f)
            rows += [(f"{f} row {i + 1}", r) for i, r in enumerate(raw)]
    if not rows:
        raise LlmgenError(f"empty dataset: {path} has no problems")
    problems = [_row_to_problem(r, where) for where, r in rows]
    for i, p in enumerate(problems):
        p.id = p.id or f"{path.stem}-{i}"
    return problems[:limit] if limit is not None else problems


# --- generated task ------------------------------------------------------------------------------

_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
_ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stamps", "shells", "cards"]


def arithmetic_problem(rng: random.Random, steps: int = 1) -> dict[str, Any]:
    """A word problem with an exact integer answer, built from ``steps`` add/subtract/multiply moves.

    The one arithmetic generator: the ``arithmetic`` eval tasks (``llmgen.tasks.make_arithmetic``)
    and the word problems of the generated math task both draw from it."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(2, 20)
    text = [f"{name} has {value} {item}."]
    for _ in range(steps):
        op = rng.choice(["add", "sub", "mul"])
        if op == "add":
            x = rng.randint(1, 20)
            value += x
            text.append(f"{name} gets {x} more.")
        elif op == "sub" and value > 1:
            x = rng.randint(1, value - 1)
            value -= x
            text.append(f"{name} gives away {x}.")
        else:
            x = rng.randint(2, 4)
            value *= x
            text.append(f"{name}'s collection grows {x} times larger.")
    text.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(text), "target": str(value)}


def _word_problem(rng: random.Random, steps: int) -> tuple[str, str, int]:
    doc = arithmetic_problem(rng, steps)
    return doc["question"], f"The answer is \\boxed{{{doc['target']}}}.", int(doc["target"])


def _equation(rng: random.Random, steps: int, hi: int) -> tuple[str, str, int]:
    """A linear equation a*x + b = c (steps > 1 adds a bracket and a second term)."""
    x, a, b = rng.randint(0, hi), rng.randint(2, 9), rng.randint(1, hi)
    if steps <= 1:
        c = a * x + b
        problem = f"Solve for x: {a}x + {b} = {c}."
        solution = f"{a}x = {c} - {b} = {c - b}, so x = {c - b} / {a} = {x}."
    else:
        d = rng.randint(1, hi)
        c = a * (x + b) - d
        problem = f"Solve for x: {a}(x + {b}) - {d} = {c}."
        solution = f"{a}(x + {b}) = {c + d}, x + {b} = {(c + d) // a}, x = {x}."
    return problem, solution + f" The answer is \\boxed{{{x}}}.", x


def generate_problem(rng: random.Random, difficulty: int = 2, kinds: Sequence[str] = ("word", "equation"),
                     max_answer: int | None = None) -> MathProblem:
    """One random problem; ``difficulty`` = number of steps (equations: numbers up to ``5 * difficulty``)."""
    hi = 5 * difficulty
    while True:
        kind = rng.choice(tuple(kinds))
        made = _word_problem(rng, difficulty) if kind == "word" else _equation(rng, difficulty, hi)
        problem, solution, answer = made
        if max_answer is not None and not 0 <= answer <= max_answer:
            continue
        return MathProblem(problem=problem, answer=str(answer), solution=solution,
                           meta={"kind": kind, "difficulty": difficulty})


TEST_SHARE = 5  # one problem text in five belongs to the test side of the generated split


def is_test_problem(text: str) -> bool:
    """The generated split: a problem's side (test or train) is a function of its text alone.

    ``llmgen eval --tasks math_generated_d*`` and ``llmgen confidence-limiting`` both draw through
    :func:`generate_task`, so whatever sizes or seeds they ask for, no problem the recipe trains on
    is ever an evaluation problem."""
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % TEST_SHARE == 0


def generate_task(n_train: int, n_test: int, difficulty: int = 2, seed: int = 0,
                  kinds: Sequence[str] = ("word", "equation"),
                  max_answer: int | None = 99) -> tuple[list[MathProblem], list[MathProblem]]:
    """The first ``n_train`` train-side and ``n_test`` test-side distinct problems drawn with ``seed``.

    Sides come from :func:`is_test_problem`, so train and test never share a problem, and the
    test list for a smaller ``n_test`` is a prefix of the one for a larger (the recipe's test set is
    the start of the eval task's). ``max_answer`` bounds answers to ``0..max_answer`` (a small
    answer space keeps direct-answer pass@N meaningful for tiny models).
    """
    if n_train < 0 or n_test < 1:
        raise LlmgenError(f"need n_train >= 0 and n_test >= 1, got {n_train} and {n_test}")
    if difficulty < 1:
        raise LlmgenError(f"difficulty must be >= 1, got {difficulty}")
    bad = [k for k in kinds if k not in ("word", "equation")]
    if bad or not kinds:
        raise LlmgenError(f"unknown problem kind {bad[0] if bad else '(none)'!r} (known: word, equation)")
    rng = random.Random(seed)
    seen: set[str] = set()
    sides: dict[bool, list[MathProblem]] = {False: [], True: []}
    want = {False: n_train, True: n_test}
    tries, limit = 0, 50 * TEST_SHARE * (n_train + n_test) + 1000
    while len(sides[False]) < n_train or len(sides[True]) < n_test:
        tries += 1
        if tries > limit:
            raise LlmgenError(f"could not generate {n_train} + {n_test} distinct problems at difficulty "
                              f"{difficulty}; ask for fewer or raise the difficulty")
        p = generate_problem(rng, difficulty, kinds, max_answer)
        side = is_test_problem(p.problem)
        if p.problem in seen or len(sides[side]) >= want[side]:
            continue
        seen.add(p.problem)
        p.id = f"gen-d{difficulty}-s{seed}-{'test' if side else 'train'}{len(sides[side])}"
        sides[side].append(p)
    return sides[False], sides[True]


# --- eval tasks -----------------------------------------------------------------------------------

def make_arithmetic(n: int = 200, steps: int = 1, seed: int = 1234, num_fewshot: int = 3) -> Task:
    """The ``arithmetic`` eval tasks: ``n`` distinct problems of the one arithmetic generator."""
    rng = random.Random(seed)
    docs, seen = [], set()
    while len(docs) < n + 8:
        d = arithmetic_problem(rng, steps)
        if d["question"] not in seen:
            seen.add(d["question"])
            docs.append(d)
    return Task(
        name="arithmetic" if steps == 1 else f"arithmetic_{steps}step", docs=docs[8:], fewshot_docs=docs[:8],
        num_fewshot=num_fewshot, input_fields=[("Question", "question")], output_descriptor="Answer",
        metrics=("exact_match", "pass@k"), extract="first_number", stop=("\n",), max_tokens=16,
        description=f"generated {steps}-step arithmetic word problems with exact integer answers",
    )



def math_task(name: str, docs: list[dict], fewshot_docs: Sequence[dict] = (), num_fewshot: int = 0,
              max_tokens: int = 16, description: str = "", extract: str = "math") -> Task:
    """Direct-answer math problems (``{"problem", "answer"}`` docs), graded by math equivalence.

    One definition for ``llmgen eval --tasks math_generated_d*`` and the pass@N recipe's pass@k
    evaluation: the prompt is ``Problem: ...\nAnswer:`` (``tasks.math.direct_prompt``), responses
    stop at a newline, and ``pass@k`` uses the unbiased estimator of ``evals.passk``. ``extract``:
    "math" (lenient: any final-answer form, numeric equivalence) or "math_boxed" (the pass@N
    reference notebook's: the last ``\\boxed{}`` answer, ``normalize_final_answer``, exact)."""
    return Task(name=name, docs=docs, fewshot_docs=list(fewshot_docs), num_fewshot=num_fewshot,
                input_fields=[("Problem", "problem")], output_descriptor="Answer", target_key="answer",
                metrics=("exact_match", "pass@k"), extract=extract, stop=("\n",), max_tokens=max_tokens,
                description=description)


def math_eval_task(difficulty: int = 2, n: int = 200) -> Task:
    """The pass@N recipe's generated math problems (direct answers), graded by math equivalence.

    The documents are the test side of the one generated split (``math_tasks.generate_task``), the
    few-shot examples its train side; ``llmgen confidence-limiting`` trains on the train side only."""
    train, test = generate_task(n_train=8, n_test=n, difficulty=difficulty, seed=0)
    to_doc = lambda p: {"problem": p.problem, "answer": p.answer}  # noqa: E731
    return math_task(f"math_generated_d{difficulty}", [to_doc(p) for p in test], [to_doc(p) for p in train],
                     num_fewshot=3, description=f"generated multi-step arithmetic/algebra (difficulty {difficulty}), exact answers")


def register_tasks(registry) -> None:
    """Called by ``llmgen.tasks`` when it loads the task families (see ``_load_plugin_tasks``)."""
    for d in (1, 2, 3):
        registry.register(f"math_generated_d{d}", lambda d=d: math_eval_task(d))
