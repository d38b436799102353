"""Math problems with checkable answers: a MATH-format loader and a generated offline task.

The generated task exists so the pass@N recipe runs without a network: multi-step arithmetic word
problems and linear equations with exact integer answers. ``difficulty`` sets the number of steps
and the size of the numbers; the train/test split is a seeded shuffle of *distinct* problem texts,
so no test problem appears in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_json, read_jsonl
from llmgen.math_answers import extract_boxed


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

NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Lev")
ITEMS = ("apples", "coins", "books", "stamps", "pens", "shells", "cards", "eggs")


def _word_problem(rng: random.Random, steps: int, hi: int) -> tuple[str, str, int] | None:
    """A story of ``steps`` operations on a count; returns (problem, solution, answer)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(1, hi)
    text = [f"{name} has {value} {item}."]
    work = [f"{name} starts with {value}."]
    for _ in range(steps):
        op = rng.choice(("add", "sub", "mul", "groups"))
        k = rng.randint(1, hi)
        if op == "add":
            text.append(f"{name} gets {k} more.")
            work.append(f"{value} + {k} = {value + k}.")
            value += k
        elif op == "sub":
            if k > value:
                return None
            text.append(f"{name} gives away {k}.")
            work.append(f"{value} - {k} = {value - k}.")
            value -= k
        elif op == "mul":
            m = rng.choice((2, 3))
            text.append(f"{name} {'doubles' if m == 2 else 'triples'} the {item}.")
            work.append(f"{value} * {m} = {value * m}.")
            value *= m
        else:
            m = rng.randint(2, 4)
            text.append(f"{name} buys {m} bags of {k}.")
            work.append(f"{value} + {m} * {k} = {value + m * k}.")
            value += m * k
    text.append(f"How many {item} now?")
    return " ".join(text), " ".join(work) + f" The answer is \\boxed{{{value}}}.", value


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
    """One random problem; ``difficulty`` = number of steps, numbers up to ``5 * difficulty``."""
    hi = 5 * difficulty
    while True:
        kind = rng.choice(tuple(kinds))
        made = _word_problem(rng, difficulty, hi) if kind == "word" else _equation(rng, difficulty, hi)
        if made is None:
            continue
        problem, solution, answer = made
        if max_answer is not None and not 0 <= answer <= max_answer:
            continue
        return MathProblem(problem=problem, answer=str(answer), solution=solution,
                           meta={"kind": kind, "difficulty": difficulty})


def generate_task(n_train: int, n_test: int, difficulty: int = 2, seed: int = 0,
                  kinds: Sequence[str] = ("word", "equation"),
                  max_answer: int | None = 99) -> tuple[list[MathProblem], list[MathProblem]]:
    """Distinct generated problems split into (train, test) by a seeded shuffle: no overlap.

    The same arguments always give the same split. ``max_answer`` bounds answers to
    ``0..max_answer`` (a small answer space keeps direct-answer pass@N meaningful for tiny models).
    """
    if n_train < 0 or n_test < 1:
        raise LlmgenError(f"need n_train >= 0 and n_test >= 1, got {n_train} and {n_test}")
    if difficulty < 1:
        raise LlmgenError(f"difficulty must be >= 1, got {difficulty}")
    bad = [k for k in kinds if k not in ("word", "equation")]
    if bad or not kinds:
        raise LlmgenError(f"unknown problem kind {bad[0] if bad else '(none)'!r} (known: word, equation)")
    rng = random.Random(seed)
    seen: dict[str, MathProblem] = {}
    total, tries = n_train + n_test, 0
    while len(seen) < total:
        tries += 1
        if tries > 50 * total + 1000:
            raise LlmgenError(f"could not generate {total} distinct problems at difficulty {difficulty}; "
                              f"ask for fewer or raise the difficulty")
        p = generate_problem(rng, difficulty, kinds, max_answer)
        seen.setdefault(p.problem, p)
    problems = list(seen.values())
    random.Random(seed + 1).shuffle(problems)
    for i, p in enumerate(problems):
        p.id = f"gen-d{difficulty}-s{seed}-{i}"
    return problems[:n_train], problems[n_train:]
