"""MATH-format loading and the generated arithmetic/algebra task."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from llmgen.errors import LlmgenError
from llmgen.tasks.math import direct_prompt, direct_target, generate_task, load_math
from llmgen.tasks.math_answers import extract_boxed, is_equiv


def test_generated_split_is_deterministic_and_disjoint():
    train, test = generate_task(300, 50, difficulty=2, seed=3)
    again_train, again_test = generate_task(300, 50, difficulty=2, seed=3)
    assert [p.problem for p in train] == [p.problem for p in again_train]
    assert [p.problem for p in test] == [p.problem for p in again_test]
    assert len(train) == 300 and len(test) == 50
    assert not {p.problem for p in train} & {p.problem for p in test}
    other, _ = generate_task(300, 50, difficulty=2, seed=4)
    assert [p.problem for p in other] != [p.problem for p in train]
    # the side is the text's sha256, recomputed here: first byte divisible by 5 means test
    side = lambda text: hashlib.sha256(text.encode()).digest()[0] % 5 == 0  # noqa: E731
    assert all(side(p.problem) for p in test) and not any(side(p.problem) for p in train)
    # a smaller test set is the start of a larger one (the recipe's test set is the eval task's start)
    _, more = generate_task(10, 80, difficulty=2, seed=3)
    assert [p.problem for p in more[:50]] == [p.problem for p in test]


def test_passn_training_set_never_meets_the_eval_problems():
    """Issue 13: `llmgen confidence-limiting`'s default training set and `llmgen eval --tasks math_generated_d*`."""
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, load_problems
    from llmgen.tasks import get_task

    config = ConfidenceLimitingConfig()
    train, test = load_problems(config)
    assert len(train) == 2000
    for d in (1, 2, 3):
        evaluated = {doc["problem"] for doc in get_task(f"math_generated_d{d}").docs}
        assert len(evaluated) == 200
        trained = {p.problem for p in load_problems(ConfidenceLimitingConfig(difficulty=d))[0]}
        assert not trained & evaluated, d
    eval_docs = get_task(f"math_generated_d{config.difficulty}").docs
    assert [p.problem for p in test] == [doc["problem"] for doc in eval_docs[: len(test)]]


def test_arithmetic_task_and_word_problems_share_one_generator():
    import random

    from llmgen.tasks import make_arithmetic
    from llmgen.tasks.math import arithmetic_problem

    task = make_arithmetic(n=5, steps=2, seed=7)
    rng = random.Random(7)
    docs = [arithmetic_problem(rng, 2) for _ in range(13)]
    assert task.fewshot_docs + task.docs == docs  # distinct draws, in order
    for doc in docs:  # the answer follows from the text: replay the moves by hand
        value = int(re.match(r"\w+ has (\d+)", doc["question"]).group(1))
        for verb, x in re.findall(r"(gets|gives away|grows) (\d+)", doc["question"]):
            x = int(x)
            value = value + x if verb == "gets" else value - x if verb == "gives away" else value * x
        assert str(value) == doc["target"]
    words = [p for p in generate_task(30, 5, difficulty=2, seed=0)[0] if p.meta["kind"] == "word"]
    assert words and all(p.problem.endswith("have now?") for p in words)


def test_generated_answers_are_exact():
    train, test = generate_task(200, 20, difficulty=3, seed=0, max_answer=None)
    for p in train + test:
        assert is_equiv(extract_boxed(p.solution), p.answer)
        if p.meta["kind"] == "equation":  # plug x back into the equation
            x = int(p.answer)
            one = re.fullmatch(r"Solve for x: (\d+)x \+ (\d+) = (-?\d+)\.", p.problem)
            two = re.fullmatch(r"Solve for x: (\d+)\(x \+ (\d+)\) - (\d+) = (-?\d+)\.", p.problem)
            if one:
                a, b, c = map(int, one.groups())
                assert a * x + b == c
            else:
                a, b, d, c = map(int, two.groups())
                assert a * (x + b) - d == c
    assert direct_prompt(train[0]).endswith("\nAnswer:")
    assert direct_target(train[0]) == f" {train[0].answer}"


def test_difficulty_changes_problems():
    easy, _ = generate_task(50, 5, difficulty=1, seed=0)
    hard, _ = generate_task(50, 5, difficulty=4, seed=0)
    assert sum(len(p.problem) for p in hard) > sum(len(p.problem) for p in easy)


def test_generate_bad_input():
    with pytest.raises(LlmgenError, match="difficulty"):
        generate_task(10, 5, difficulty=0)
    with pytest.raises(LlmgenError, match="kind"):
        generate_task(10, 5, kinds=("geometry",))
    with pytest.raises(LlmgenError, match="distinct"):
        generate_task(200, 10, difficulty=1, kinds=("equation",), max_answer=1)


def test_load_math_jsonl_json_and_folder(tmp_path):
    rows = [{"problem": "What is 1+1?", "solution": r"It is $\boxed{2}$.", "level": "Level 1"},
            {"problem": "Half of 1?", "solution": "...", "answer": r"\frac{1}{2}"}]
    jl = tmp_path / "math.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probs = load_math(jl)
    assert [p.answer for p in probs] == ["2", r"\frac{1}{2}"]
    assert probs[0].meta == {"level": "Level 1"}

    js = tmp_path / "math.json"
    js.write_text(json.dumps({"data": rows}))
    assert len(load_math(js, limit=1)) == 1

    folder = tmp_path / "MATH" / "test" / "algebra"
    folder.mkdir(parents=True)
    for i, r in enumerate(rows):
        (folder / f"{i}.json").write_text(json.dumps(r))
    assert [p.answer for p in load_math(tmp_path / "MATH", split="test")] == ["2", r"\frac{1}{2}"]


def test_load_math_datasets_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([{"problem": "2+2?", "solution": r"\boxed{4}"}])
    DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    assert load_math(tmp_path / "hf")[0].answer == "4"
    with pytest.raises(LlmgenError, match="no split 'train'"):
        load_math(tmp_path / "hf", split="train")


def test_load_math_errors(tmp_path):
    with pytest.raises(LlmgenError, match="not found"):
        load_math(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "?", "solution": "no box"}) + "\n")
    with pytest.raises(LlmgenError, match="row 1: no 'answer'"):
        load_math(bad)
    noq = tmp_path / "noq.jsonl"
    noq.write_text(json.dumps({"answer": "1"}) + "\n")
    with pytest.raises(LlmgenError, match="missing field 'problem'"):
        load_math(noq)
