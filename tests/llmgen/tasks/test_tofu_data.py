"""TOFU loader on the real TOFU rows (local folder and hub parquet layout), and the synthetic
generator's determinism and schema (the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.tasks.tofu import (
    BASE_ANSWER_KEY,
    REFERENCE_DS_SIZE,
    SyntheticTofuConfig,
    check_forget_split,
    eval_configs,
    forget_config,
    load_eval_sets,
    load_tofu,
    retain_config,
    synthetic_tofu,
    validate_rows,
    write_synthetic_tofu,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "tofu"
"""The first rows of TOFU's own files, unchanged (copied from ../shared/data/tofu; see its README)."""
REAL_CONFIGS = {"forget10": 40, "forget10_perturbed": 40, "retain90": 200, "retain_perturbed": 40,
                "real_authors_perturbed": 30, "world_facts_perturbed": 30}


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("config, n", sorted(REAL_CONFIGS.items()))
def test_every_real_config_loads_from_a_local_folder(config, n):
    rows = load_tofu(FIXTURE, config)
    assert rows == _json_lines(FIXTURE / f"{config}.json") and len(rows) == n


def test_real_schema_utility_sets_have_no_paraphrase():
    for config in ("real_authors_perturbed", "world_facts_perturbed"):
        for row in load_tofu(FIXTURE, config):
            assert set(row) == {"question", "answer", "perturbed_answer"} and len(row["perturbed_answer"]) == 3
    for config in ("forget10_perturbed", "retain_perturbed"):
        for row in load_tofu(FIXTURE, config):
            assert "paraphrased_answer" in row and len(row["perturbed_answer"]) == 5
    # a forget split's rows are the first rows of its perturbed twin
    pert = load_tofu(FIXTURE, "forget10_perturbed")
    assert [(r["question"], r["answer"]) for r in load_tofu(FIXTURE, "forget10")] == \
        [(r["question"], r["answer"]) for r in pert]
    sets = load_eval_sets(FIXTURE, "forget10")
    assert set(sets) == {"forget", "retain", "real_authors", "world_facts"} and len(sets["real_authors"]) == 30
    assert BASE_ANSWER_KEY["real_authors"] == "answer" and BASE_ANSWER_KEY["forget"] == "paraphrased_answer"


def test_real_configs_load_from_the_hub_parquet_layout(tmp_path):
    """The hub's parquet export: ``<config>/train-00000-of-00001.parquet`` per config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for config in REAL_CONFIGS:
        rows = _json_lines(FIXTURE / f"{config}.json")
        (tmp_path / config).mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / config / "train-00000-of-00001.parquet")
        assert load_tofu(tmp_path, config) == rows
    assert load_eval_sets(tmp_path, "forget10") == load_eval_sets(FIXTURE, "forget10")


def test_ds_size_keeps_the_first_rows():
    assert REFERENCE_DS_SIZE == 300
    full = load_eval_sets(FIXTURE, "forget10")
    cut = load_eval_sets(FIXTURE, "forget10", 7)
    assert all(cut[k] == full[k][:7] for k in full)
    assert load_eval_sets(FIXTURE, "forget10", REFERENCE_DS_SIZE) == full  # fewer than 300 rows here
    with pytest.raises(LlmgenError, match="subset size must be >= 1"):
        load_eval_sets(FIXTURE, "forget10", 0)


def test_loader_errors(tmp_path):
    with pytest.raises(LlmgenError, match="'forget05' not found"):
        load_tofu(FIXTURE, "forget05")
    with pytest.raises(LlmgenError, match="folder not found"):
        load_tofu(tmp_path / "nope", "full")
    (tmp_path / "forget01_perturbed.jsonl").write_text('{"question": "q", "answer": "a", "perturbed_answer": ["b"]}\n')
    with pytest.raises(LlmgenError, match="row 0: missing field 'paraphrased_answer'"):
        load_tofu(tmp_path, "forget01_perturbed")
    (tmp_path / "world_facts_perturbed.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(LlmgenError, match="row 0: missing field 'perturbed_answer'"):
        load_tofu(tmp_path, "world_facts_perturbed")
    with pytest.raises(LlmgenError, match="perturbed_answer must be a non-empty list"):
        validate_rows([{"question": "q", "answer": "a", "paraphrased_answer": "b", "perturbed_answer": "c"}],
                      "x_perturbed")


def test_unknown_forget_split_lists_the_valid_ones():
    with pytest.raises(LlmgenError, match=r"unknown forget split 'forget99' in .*tofu \(valid: forget10\)"):
        check_forget_split("forget99", FIXTURE)
    with pytest.raises(LlmgenError, match=r"'forget99' in TOFU \(valid: forget01, forget05, forget10\)"):
        check_forget_split("forget99")
    assert check_forget_split("10", FIXTURE) == "forget10"


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
    # the real files' schema, field for field
    real = {c: set(_json_lines(FIXTURE / f"{c}.json")[0]) for c in REAL_CONFIGS}
    for config, keys in real.items():
        synth = "forget10_perturbed" if config == "forget10_perturbed" else config
        assert all(set(r) == keys for r in data[synth]), config
    assert all(len(r["perturbed_answer"]) == 5 for r in data["forget10_perturbed"] + data["retain_perturbed"])


def test_written_synthetic_set_loads(tmp_path):
    cfg = SyntheticTofuConfig(n_authors=6, seed=1, retain_eval_size=10)
    write_synthetic_tofu(tmp_path, cfg)
    assert load_tofu(tmp_path, "forget10_perturbed") == synthetic_tofu(cfg)["forget10_perturbed"]
    assert len(load_eval_sets(tmp_path, "forget10")["retain"]) == 10


def test_long_answers_keep_the_facts_and_the_truth_ratio_contrast():
    short = synthetic_tofu(SyntheticTofuConfig(n_authors=10, seed=2, answer_style="short"))
    long = synthetic_tofu(SyntheticTofuConfig(n_authors=10, seed=2))  # long is the default
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


def test_one_synthetic_source_for_eval_and_unlearn(tmp_path, monkeypatch):
    """`llmgen eval --tasks tofu_*` and `llmgen npo-unlearning --data synthetic` read the same folder."""
    from llmgen.recipes.npo_unlearning import UnlearnConfig, data_source
    from llmgen.tasks.tofu import tofu_data_source

    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMGEN_TOFU_DATA", raising=False)
    folder = tofu_data_source()
    assert data_source(UnlearnConfig(output_dir=str(tmp_path / "run"))) == folder
    assert load_tofu(folder, "forget10_perturbed") == synthetic_tofu()["forget10_perturbed"]
    assert not (tmp_path / "run").exists()  # nothing in the run folder
