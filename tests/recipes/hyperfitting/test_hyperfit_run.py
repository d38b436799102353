"""A tiny end-to-end hyperfitting run (tiny random Llama, byte tokenizer) and the CLI command."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.recipes.hyperfitting import GENERATORS, HyperfittingConfig, run

WORDS = "the a cat dog sat ran on under mat log tree house river quickly slowly red blue".split()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(40)))
    return str(path)


def tiny_vocab(model_dir: str) -> int:
    return json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]


def _config(model_dir, text, out, **kw) -> HyperfittingConfig:
    """recipes/hyperfitting/configs/tiny.yaml on the tiny model; ``kw`` are dotted overrides."""
    from llmgen.config import load_config, recipe_config

    base = {"model": model_dir, "text_source": text, "output_dir": str(out)}
    return load_config(HyperfittingConfig, recipe_config("hyperfitting", "tiny"), {**base, **kw})


def test_tiny_run_writes_every_output(tiny_model_dir, text_file, tmp_path):
    res = run(_config(tiny_model_dir, text_file, tmp_path, citation_blocker=True))
    assert set(res["generators"]) == set(GENERATORS)
    for metrics in res["generators"].values():
        for key in ("ttr", "distinct_2", "self_bleu", "repetition_rate", "longest_loop", "entropy",
                    "train_overlap", "heldout_perplexity"):
            assert key in metrics
    assert [e["epoch"] for e in res["epochs"]] == [0, 1, 2, 3]
    # training on the 8 sequences teaches the word distribution of the held-out documents too:
    # teacher-forced held-out perplexity and entropy fall epoch by epoch from the random model's
    ppl = [e["heldout_perplexity"] for e in res["epochs"]]
    ent = [e["heldout_entropy"] for e in res["epochs"]]
    assert ppl == sorted(ppl, reverse=True) and len(set(ppl)) == len(ppl)
    assert ent == sorted(ent, reverse=True) and len(set(ent)) == len(ent)
    vocab = tiny_vocab(tiny_model_dir)
    assert ent[0] == pytest.approx(math.log(vocab), abs=0.1)  # a random init is near uniform
    assert ent[-1] < ent[0] - 0.5
    gens = res["generators"]
    # the final held-out numbers are the last epoch's measurement, not a second computation
    for key in ("heldout_perplexity", "heldout_entropy"):
        assert gens["hyperfitted_greedy"][key] == res["epochs"][-1][key]
        assert gens["base_greedy"][key] == res["epochs"][0][key]
    # the epoch-3 curve point was measured on the same prompts and length as the final run
    assert gens["hyperfitted_greedy"]["entropy"] == res["epochs"][-1]["entropy"]
    assert res["data"]["split"] == "document" and res["data"]["train_sequences"] == 8
    losses = [e["train_loss"] for e in res["epochs"][1:]]
    assert losses[-1] < losses[0]  # training happened through the shared loop
    assert res["train"]["steps"] == 6 and len(res["train"]["step_losses"]) == 6
    steps = [loss for _, loss in res["train"]["step_losses"]]
    assert res["train"]["epoch_losses"] == pytest.approx([sum(steps[i:i + 2]) / 2 for i in (0, 2, 4)])
    assert losses == pytest.approx(res["train"]["epoch_losses"])  # each point: the epoch just finished
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["generators"].keys() == res["generators"].keys()
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * len(GENERATORS) and {r["task"] for r in rows} == set(GENERATORS)
    # the one results schema: each generator an evaluation; its per-continuation values average to its metrics
    from llmgen.results import check_results

    check_results(tmp_path)
    for name in GENERATORS:
        mine = [r for r in rows if r["task"] == name]
        assert [r["doc_id"] for r in mine] == [0, 1, 2, 3] and len({r["prompt"] for r in mine}) == 4
        for key in ("ttr", "repetition_rate", "longest_loop", "train_overlap", "entropy"):
            assert saved["results"][name][key] == pytest.approx(sum(r["metrics"][key] for r in mine) / 4)
    assert (tmp_path / "ttr_entropy_vs_epoch.png").stat().st_size > 0
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["num_sequences"] == 8


def test_run_is_deterministic_and_a_rerun_resumes_from_its_cache(tiny_model_dir, text_file, tmp_path):
    """A rerun into the same folder trains to the same weights (content fingerprints match), so the
    request cache in the run folder answers every continuation, with the same numbers."""
    cfg = _config(tiny_model_dir, text_file, tmp_path, **{"train.epochs": 1, "train.seed": 5})
    a = run(cfg)
    samples = (tmp_path / "samples.jsonl").read_text()
    assert a["cache"]["misses"] > 0 and a["cache"]["path"] == str(tmp_path / "requests.sqlite")
    b = run(cfg)
    assert b["cache"]["misses"] == 0 and b["cache"]["hits"] == a["cache"]["hits"] + a["cache"]["misses"]
    assert (tmp_path / "samples.jsonl").read_text() == samples
    assert a["generators"] == b["generators"] and a["epochs"] == b["epochs"]


def test_bad_input_fails_before_writing(tiny_model_dir, text_file, tmp_path):
    with pytest.raises(LlmgenError, match="0 documents of at least 100000 tokens"):
        run(_config(tiny_model_dir, text_file, tmp_path / "long", seq_len=100_000, prompt_len=8))
    with pytest.raises(LlmgenError, match="longer than the data"):
        run(_config(tiny_model_dir, text_file, tmp_path / "long", seq_len=100_000, prompt_len=8, split="stream"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LlmgenError, match="empty dataset"):
        run(_config(tiny_model_dir, str(empty), tmp_path / "empty"))
    assert not (tmp_path / "long").exists() and not (tmp_path / "empty").exists()


def test_cli_hyperfit(tiny_model_dir, text_file, tmp_path, capsys):
    from llmgen.cli.main import main

    out = tmp_path / "cli"
    main(["hyperfitting", "--model", tiny_model_dir, "--text", text_file, "--sequences", "8", "--seq-len", "48",
          "--prompts", "4", "--prompt-len", "8", "--gen-len", "24", "--epochs", "1", "--lr", "1e-3",
          "--batch-size", "4", "--output", str(out)])
    assert (out / "results.json").is_file()
    assert "hyperfitted_greedy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["hyperfitting", "--model", tiny_model_dir, "--text", text_file, "--seq-len", "100000",
              "--output", str(tmp_path / "bad")])
    assert exc.value.code == 2
