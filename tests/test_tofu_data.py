"""TOFU loader on a hub-format fixture, and the synthetic generator's determinism and schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.tofu import (
    SyntheticTofuConfig,
    eval_configs,
    forget_config,
    load_eval_sets,
    load_tofu,
    retain_config,
    synthetic_tofu,
    validate_rows,
    write_synthetic_tofu,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tofu"


def test_loader_reads_hub_format_fixture():
    rows = load_tofu(FIXTURE, "forget01_perturbed")
    assert len(rows) == 2
    assert isinstance(rows[0]["perturbed_answer"], list) and len(rows[0]["perturbed_answer"]) == 3
    assert rows[0]["paraphrased_answer"].startswith("The renowned")
    assert [r["question"] for r in load_tofu(FIXTURE, "forget01")] == [r["question"] for r in rows]
    world = load_tofu(FIXTURE, "world_facts_perturbed")  # a parquet shard folder
    assert world[0]["answer"] == "Paris" and world[0]["perturbed_answer"] == ["London", "Rome", "Berlin"]
    sets = load_eval_sets(FIXTURE, "forget01")
    assert set(sets) == {"forget", "retain", "real_authors", "world_facts"}
    assert len(sets["retain"]) == 3


def test_loader_errors(tmp_path):
    with pytest.raises(LlmgenError, match="'forget05' not found"):
        load_tofu(FIXTURE, "forget05")
    with pytest.raises(LlmgenError, match="folder not found"):
        load_tofu(tmp_path / "nope", "full")
    (tmp_path / "forget01_perturbed.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(LlmgenError, match="row 0: missing field 'paraphrased_answer'"):
        load_tofu(tmp_path, "forget01_perturbed")
    with pytest.raises(LlmgenError, match="perturbed_answer must be a non-empty list"):
        validate_rows([{"question": "q", "answer": "a", "paraphrased_answer": "b", "perturbed_answer": "c"}],
                      "x_perturbed")


def test_split_names():
    assert forget_config(5) == "forget05" and retain_config("forget10") == "retain90"
    assert eval_configs("forget01")["forget"] == "forget01_perturbed"
    with pytest.raises(LlmgenError, match="unknown forget split"):
        forget_config("forget")


def test_generator_is_deterministic_and_seeded():
    a, b = synthetic_tofu(SyntheticTofuConfig(seed=3)), synthetic_tofu(SyntheticTofuConfig(seed=3))
    assert a == b
    assert synthetic_tofu(SyntheticTofuConfig(seed=4))["full"] != a["full"]


def test_generator_schema_and_splits():
    cfg = SyntheticTofuConfig(n_authors=20, seed=0)
    data = synthetic_tofu(cfg)
    for name, rows in data.items():
        validate_rows(rows, name)
    assert len(data["full"]) == 20 * 8
    for p, n_forget_authors in [(1, 1), (5, 1), (10, 2)]:
        forget, retain = data[f"forget{p:02d}"], data[f"retain{100 - p}"]
        assert len(forget) == 8 * n_forget_authors
        assert retain + forget == data["full"]
        assert not {r["question"] for r in forget} & {r["question"] for r in retain}
        assert data["full"][-len(forget):] == forget  # the last authors are forgotten, as in TOFU
    for row in data["forget10_perturbed"] + data["retain_perturbed"]:
        assert len(row["perturbed_answer"]) == cfg.n_perturbed == len(set(row["perturbed_answer"]))
        assert row["answer"] not in row["perturbed_answer"] and row["paraphrased_answer"] != row["answer"]
        # same wording as the paraphrase: only the fact differs (as in TOFU)
        assert all(p.split()[:2] == row["paraphrased_answer"].split()[:2] for p in row["perturbed_answer"])
    for row in data["real_authors_perturbed"] + data["world_facts_perturbed"]:
        assert len(row["perturbed_answer"]) == 3 and row["answer"] not in row["perturbed_answer"]
    assert len(data["retain_perturbed"]) == cfg.retain_eval_size


def test_written_synthetic_set_loads(tmp_path):
    cfg = SyntheticTofuConfig(n_authors=6, seed=1, retain_eval_size=10)
    write_synthetic_tofu(tmp_path, cfg)
    assert load_tofu(tmp_path, "forget10_perturbed") == synthetic_tofu(cfg)["forget10_perturbed"]
    assert len(load_eval_sets(tmp_path, "forget10")["retain"]) == 10


def test_long_answers_keep_the_facts_and_the_truth_ratio_contrast():
    short = synthetic_tofu(SyntheticTofuConfig(n_authors=10, seed=2))
    long = synthetic_tofu(SyntheticTofuConfig(n_authors=10, seed=2, answer_style="long"))
    assert long == synthetic_tofu(SyntheticTofuConfig(n_authors=10, seed=2, answer_style="long"))
    assert [r["question"] for r in long["full"]] == [r["question"] for r in short["full"]]
    for s_row, l_row in zip(short["forget10_perturbed"], long["forget10_perturbed"], strict=True):
        validate_rows([l_row], "forget10_perturbed")
        # the long answer states the same fact: the short answer's last word (the value) is in it
        value = s_row["answer"].rstrip(".").split("was born in ")[-1].split()[-1].strip('"')
        assert value in l_row["answer"]
        assert len(l_row["answer"].split()) >= 2 * len(s_row["answer"].split())
        # perturbed answers differ from the paraphrase in the fact only: same words otherwise
        para = l_row["paraphrased_answer"].split()
        for p in l_row["perturbed_answer"]:
            assert p != l_row["paraphrased_answer"]
            assert p.split()[:2] == para[:2] and p.split()[-3:] == para[-3:]
    with pytest.raises(LlmgenError, match="answer_style"):
        synthetic_tofu(SyntheticTofuConfig(answer_style="medium"))
