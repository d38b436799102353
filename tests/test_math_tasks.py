"""MATH-format loading and the generated arithmetic/algebra task."""

from __future__ import annotations

import json
import re

import pytest

from llmgen.errors import LlmgenError
from llmgen.math_answers import extract_boxed, is_equiv
from llmgen.math_tasks import direct_prompt, direct_target, generate_task, load_math


def test_generated_split_is_deterministic_and_disjoint():
    train, test = generate_task(300, 50, difficulty=2, seed=3)
    again_train, again_test = generate_task(300, 50, difficulty=2, seed=3)
    assert [p.problem for p in train] == [p.problem for p in again_train]
    assert [p.problem for p in test] == [p.problem for p in again_test]
    assert len(train) == 300 and len(test) == 50
    assert not {p.problem for p in train} & {p.problem for p in test}
    other, _ = generate_task(300, 50, difficulty=2, seed=4)
    assert [p.problem for p in other] != [p.problem for p in train]


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
