"""``llmgen eval`` paths that no other test runs: --formats/--format-budget, --model-args, --apply-chat-template
and --backend vllm. Each asserts what the run folder holds, not only the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.cli.main import main


def _eval(model: str, out: Path, *args: str, task: str = "arithmetic") -> dict:
    main(["eval", "--model", model, "--tasks", task, "--limit", "4", "--max-tokens", "3", "--no-cache",
          "--output-dir", str(out), *args])
    return json.loads((out / "results.json").read_text())


def _samples(out: Path, name: str = "samples.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def test_eval_formats_exhaustive_and_with_a_budget(tiny_model_dir, tmp_path, capsys):
    res = _eval(tiny_model_dir, tmp_path / "k3", "--formats", "3")
    entry = res["format_spread"]["arithmetic"]
    assert entry["mode"] == "exhaustive" and len(entry["formats"]) == 3
    assert [f["format_id"] for f in entry["formats"]] == [0, 1, 2] and entry["formats"][0]["original"]
    assert len({f["format"] for f in entry["formats"]}) == 3
    s = entry["summary"]["exact_match"]
    values = sorted(f["metrics"]["exact_match"] for f in entry["formats"])
    assert s["formats"] == 3 and s["min"] <= s["median"] <= s["max"]
    assert (s["min"], s["median"], s["max"]) == (values[0], values[1], values[2])
    assert s["original"] == res["results"]["arithmetic"]["exact_match"]
    rows = _samples(tmp_path / "k3", "format_samples.jsonl")
    assert sorted({r["format_id"] for r in rows}) == [0, 1, 2] and len(rows) == 3 * 4
    assert (tmp_path / "k3" / "formats_arithmetic.json").is_file()
    assert "k3/results.json" in capsys.readouterr().err

    res = _eval(tiny_model_dir, tmp_path / "bandit", "--formats", "3", "--format-budget", "8")
    entry = res["format_spread"]["arithmetic"]
    assert entry["mode"] == "bandit" and entry["budget"] == 8 and entry["budget_spent"] <= 8
    assert len(entry["pulls"]["counts"]) == 3 and entry["evaluations"] >= entry["budget_spent"]
    assert entry["formats"][entry["best"]]["evaluated"] and entry["formats"][entry["worst"]]["evaluated"]
    assert res["format_eval"] == {"num_formats": 3, "budget": 8}
    # a budget the bandit cannot spend: one error line, nothing written
    with pytest.raises(SystemExit) as e:
        _eval(tiny_model_dir, tmp_path / "bad", "--formats", "3", "--format-budget", "6")
    assert e.value.code == 2 and "budget" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_eval_model_args_reach_the_backend(tiny_model_dir, tmp_path):
    """dtype from --model-args loads the model in that dtype: the choice log-likelihoods show it."""
    plain = _eval(tiny_model_dir, tmp_path / "plain", task="sentiment")
    f32 = _eval(tiny_model_dir, tmp_path / "f32", "--model-args", "dtype=float32", task="sentiment")
    bf16 = _eval(tiny_model_dir, tmp_path / "bf16", "--model-args", '{"dtype": "bfloat16"}', task="sentiment")
    assert (plain["backend"]["dtype"], f32["backend"]["dtype"], bf16["backend"]["dtype"]) == ("float32", "float32",
                                                                                            "bfloat16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["model_args"]["dtype"] == "bfloat16"
    lps = {name: [r["choice_logprobs"] for r in _samples(tmp_path / name)] for name in ("plain", "f32", "bf16")}
    assert lps["f32"] == lps["plain"]  # float32 is the default: the same numbers
    assert lps["bf16"] != lps["plain"]  # bfloat16 rounds the weights: other numbers, close to float32's
    assert all(abs(x - y) < 1.0 for row_b, row_p in zip(lps["bf16"], lps["plain"], strict=True)
               for x, y in zip(row_b, row_p, strict=True))


def test_eval_apply_chat_template(default_model_dir, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    main(["eval", "--model", default_model_dir, "--tasks", "arithmetic", "--limit", "2", "--max-tokens", "2",
          "--no-cache", "--apply-chat-template", "--output-dir", str(tmp_path / "chat")])
    rows = _samples(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    header = tok.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False,
                                     add_generation_prompt=True).split("X")[0]
    assert header.startswith("<|im_start|>")
    for r in rows:  # the template wraps the task's own prompt and ends at the assistant's turn
        assert r["prompt"].startswith(header) and r["prompt"].endswith("<|im_start|>assistant\n")
        assert "Question:" in r["prompt"]
    assert json.loads((tmp_path / "chat" / "config.json").read_text())["apply_chat_template"] is True
    # the tiny model has no chat template: one error line, exit 2, no run folder
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", tiny_model_dir, "--tasks", "arithmetic", "--limit", "2", "--no-cache",
              "--apply-chat-template", "--output-dir", str(tmp_path / "nochat")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert e.value.code == 2 and len(err) == 1 and "no chat template" in err[0]
    assert not (tmp_path / "nochat").exists()


def test_eval_backend_vllm_matches_hf(tiny_model_dir, vllm_tiny, tmp_path):
    """``--backend vllm`` through ``run_eval``: the same greedy answers as the HF backend (marked vllm by conftest).

    ``max_model_len`` is the tiny model's own 1024: the backend's default (2048) is refused for it,
    see the next test. The run's backend shares the session engine that ``vllm_tiny`` holds open
    (same settings), so no engine starts here.
    """
    hf = _eval(tiny_model_dir, tmp_path / "hf")
    vl = _eval(tiny_model_dir, tmp_path / "vllm", "--backend", "vllm", "--model-args", "max_model_len=1024")
    assert vl["backend"]["backend"] == "vllm" and hf["backend"]["backend"] == "hf"
    assert [r["prompt"] for r in _samples(tmp_path / "vllm")] == [r["prompt"] for r in _samples(tmp_path / "hf")]
    assert [r["responses"] for r in _samples(tmp_path / "vllm")] == [r["responses"] for r in _samples(tmp_path / "hf")]
    assert vl["results"] == hf["results"]


def test_eval_backend_vllm_default_context_fits_the_model(tiny_model_dir, vllm_tiny, tmp_path):
    """No --model-args: the engine's context follows the model's (1024 for the tiny model), not a fixed 2048.
    (The engine is ``vllm_tiny``'s, shared: it was started with these same default settings.)"""
    res = _eval(tiny_model_dir, tmp_path / "vllm", "--backend", "vllm")
    assert res["backend"]["backend"] == "vllm" and res["backend"]["max_length"] == 1024
