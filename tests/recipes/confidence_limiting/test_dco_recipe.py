"""End to end: CE and DCO for one epoch on a tiny model through the shared loop and the HF backend."""

from __future__ import annotations

import json
import math

import pytest

from llmgen.io import read_jsonl


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core box, two threads per process oversubscribe the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_confidence_limiting_end_to_end(tiny_model_dir, tmp_path, one_thread):
    from llmgen.config import load_config
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, run

    out = tmp_path / "run"
    cfg = load_config(ConfidenceLimitingConfig, None, {
        "model": tiny_model_dir, "output_dir": str(out), "n_train": 32, "n_test": 4, "train.epochs": 1,
        "eval.num_samples": 4, "train.batch_size": 16, "train.lr": 1e-3, "eval.max_new_tokens": 3, "dco_n": 4,
        "progress": False})
    results = run(cfg)

    assert results["ks"] == [1, 2, 4]
    for method in ("ce", "dco"):
        hist = results["methods"][method]
        assert [h["epoch"] for h in hist] == [0, 1]
        for h in hist:
            for k in ("1", "2", "4"):
                assert 0.0 <= h["passk"][k]["unbiased"] <= 1.0
            assert h["passk"]["1"]["unbiased"] <= h["passk"]["4"]["unbiased"]
        assert hist[1]["train"]["steps"] == 2
    # both methods start from the same base evaluation
    assert results["methods"]["ce"][0]["passk"] == results["methods"]["dco"][0]["passk"]
    assert results["methods"]["dco"][1]["train"]["mean_dco_weight"] > 0.9  # random model: p̂ tiny, F ≈ 1

    saved = json.loads((out / "results.json").read_text())
    assert saved["comparison"]["ce"]["epochs"] == [0, 1]
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 2 * 2 * 4  # methods x epochs x problems
    assert {"method", "epoch", "greedy_confidence", "greedy_correct", "num_correct", "sample_answers"} <= set(rows[0])
    assert all(0.0 <= r["greedy_confidence"] <= 1.0 and len(r["sample_answers"]) == 4 for r in rows)
    for name in ("passk.png", "passk_epochs.png", "confidence.png", "config.json"):
        assert (out / name).stat().st_size > 0
    # the runner's evaluations in the one schema: one per method and epoch, pass@k as the recipe's curve
    from llmgen.results import check_results

    assert set(check_results(out)["results"]) == {"ce/epoch0", "ce/epoch1", "dco/epoch0", "dco/epoch1"}
    for method in ("ce", "dco"):
        for h in results["methods"][method]:
            metrics = saved["results"][f"{method}/epoch{h['epoch']}"]
            for k in ("1", "2", "4"):
                assert metrics[f"pass@{k}"] == pytest.approx(h["passk"][k]["unbiased"])
    for r in rows:  # per-problem pass@2 from the runner = 1 - C(n-c, 2) / C(n, 2) on the row's correctness
        c = sum(r["correct"])
        assert r["metrics"]["pass@2"] == pytest.approx(1 - math.comb(4 - c, 2) / math.comb(4, 2))
        assert r["num_correct"] == sum(r["correct"]) and r["task"] == f"{r['method']}/epoch{r['epoch']}"


def test_cli_passn_bad_input(tmp_path, capsys):
    from llmgen.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["confidence-limiting", "--n", "0", "-o", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "N" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # checked before writing anything
    with pytest.raises(SystemExit) as exc:
        main(["confidence-limiting", "--samples", "8", "--train-data", "x.jsonl", "-o", str(tmp_path / "run")])
    assert exc.value.code == 2


@pytest.mark.slow
def test_cli_passn_runs(tiny_model_dir, tmp_path, capsys, one_thread):
    from llmgen.cli.main import main

    out = tmp_path / "cli-run"
    main(["confidence-limiting", "--model", tiny_model_dir, "--n-train", "16", "--n-test", "2", "--epochs", "1", "--samples", "2",
          "--batch-size", "16", "--max-new-tokens", "2", "--methods", "ce", "-o", str(out)])
    assert "pass@1_by_epoch" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["ks"] == [1, 2]


@pytest.mark.slow
def test_cli_passn_with_train_and_test_files(tiny_model_dir, tmp_path, capsys, one_thread):
    """Issue 19: `llmgen confidence-limiting --train-data/--test-data` on MATH-format files (answers in
    \\boxed{} of the solution, as in MATH, or an answer field)."""
    from llmgen.cli.main import main

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "solution": f"It is $\\boxed{{{2 * i}}}$.",
                                         "level": "Level 1"}) + "\n" for i in range(12)))
    test = tmp_path / "test"
    (test / "algebra").mkdir(parents=True)  # the MATH folder layout: split/subject/N.json
    for i in range(3):
        (test / "algebra" / f"{i}.json").write_text(json.dumps({"problem": f"Compute {i} * 3.", "answer": str(3 * i)}))
    out = tmp_path / "files-run"
    main(["confidence-limiting", "--model", tiny_model_dir, "--train-data", str(train), "--test-data", str(test), "--epochs", "1",
          "--samples", "2", "--batch-size", "6", "--max-new-tokens", "2", "--methods", "dco", "--n", "2",
          "-o", str(out)])
    assert "pass@1_by_epoch" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["n_train"] == 12 and results["n_test"] == 3
    assert results["config"]["task"] == "math"
    hist = results["methods"]["dco"]
    assert [h["epoch"] for h in hist] == [0, 1] and hist[1]["train"]["steps"] == 2  # 12 problems / batch 6
    rows = read_jsonl(out / "samples.jsonl")
    assert sorted(r["answer"] for r in rows if r["epoch"] == 1) == ["0", "3", "6"]  # the test file's answers


def test_passn_evaluation_resumes_from_the_request_cache(tiny_model_dir, tmp_path, one_thread):
    """pass@k goes through the runner: a second evaluation of the same in-memory weights is served by
    the request cache (content fingerprint, not id()), with the same numbers; other weights miss."""
    import torch

    from llmgen.backends.hf import HFBackend
    from llmgen.cache import RequestCache
    from llmgen.config import load_config
    from llmgen.models import load_model
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, evaluate, load_problems

    cfg = load_config(ConfidenceLimitingConfig, None, {"model": tiny_model_dir, "n_train": 1, "n_test": 3,
                                                       "eval.num_samples": 4, "eval.max_new_tokens": 3, "progress": False})
    problems = load_problems(cfg)[1]
    model, tok = load_model(tiny_model_dir)
    cache = RequestCache(tmp_path / "requests.sqlite")
    first = evaluate(HFBackend("in-memory", model_obj=model, tokenizer_obj=tok), problems, cfg, seed=1, cache=cache)
    misses = cache.misses
    assert misses > 0 and cache.hits == 0
    again = evaluate(HFBackend("in-memory", model_obj=model, tokenizer_obj=tok), problems, cfg, seed=1, cache=cache)
    assert cache.misses == misses and cache.hits > 0
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)  # (NaN block_se compares as text)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # other weights: nothing may come from the cache
    hits = cache.hits
    evaluate(HFBackend("in-memory", model_obj=model, tokenizer_obj=tok), problems, cfg, seed=1, cache=cache)
    assert cache.hits == hits and cache.misses > misses
    cache.close()
