"""The Only-IF sweep: a tiny end-to-end run through the shared training loop, resume, bad input."""

from __future__ import annotations

import json

import pytest

from llmgen.config import load_config, recipe_config
from llmgen.errors import LlmgenError
from llmgen.recipes.instruction_diversity import SweepConfig, exact_match_report, run, run_sweep
from llmgen.recipes.instruction_diversity.markov import MarkovConfig


def tiny_sweep(out, **kw) -> SweepConfig:
    """recipes/instruction_diversity/configs/tiny.yaml; ``kw`` are (dotted) config keys."""
    return load_config(SweepConfig, recipe_config("instruction_diversity", "tiny"), {"output_dir": str(out), **kw})


def test_sweep_runs_writes_table_and_resumes_without_rerunning(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path)
    first = run(cfg)
    assert first["ran"] == 2 and first["skipped"] == 0
    cells = sorted((tmp_path / "cells").glob("*.json"))
    assert len(cells) == 2
    row = json.loads(cells[0].read_text())
    assert row["unseen_n_all"] == 6 and row["steps"] == 2
    # the reported accuracies are those of the written predictions, recounted here
    preds = [json.loads(line) for line in (tmp_path / "cells" / cells[0].stem / "samples.jsonl").read_text().splitlines()]
    hit = [p["prediction"] == p["target"] for p in preds]
    assert row["unseen_accuracy"] == pytest.approx(sum(hit) / len(hit))
    for kind, noop in (("noop", True), ("rewrite", False)):
        part = [h for h, p in zip(hit, preds, strict=True) if p["noop"] == noop]
        assert row[f"unseen_n_{kind}"] == len(part) == 3  # test_noop_fraction 0.5 of 6
        assert row[f"unseen_accuracy_{kind}"] == pytest.approx(sum(part) / len(part))
    assert row["final_loss"] > 0 and row["seen_n_all"] == 4
    assert [r["num_instructions"] for r in first["table"]] == [2, 8]
    assert "| instructions |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_vs_instructions.png").stat().st_size > 0
    samples = (tmp_path / "cells" / cells[0].stem / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 6 and {"rule", "input", "target", "prediction", "correct"} <= set(json.loads(samples[0]))

    # the cells' evaluations went through the runner and are in the one schema, one per cell and kind
    from llmgen.results import check_results

    saved = check_results(tmp_path)
    assert set(saved["results"]) == {f"{c.stem}/{kind}" for c in cells for kind in ("unseen", "seen")}
    assert saved["results"][f"{cells[0].stem}/unseen"]["exact_match"] == pytest.approx(sum(hit) / len(hit))
    assert saved["n_samples"][f"{cells[0].stem}/seen"] == 4
    assert all(p["metrics"]["exact_match"] == float(h) for p, h in zip(preds, hit, strict=True))

    stamps = {p: p.stat().st_mtime_ns for p in cells}
    again = run_sweep(tiny_sweep(tmp_path), progress=False)
    assert again["ran"] == 0 and again["skipped"] == 2
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps
    assert again["table"] == first["table"]
    assert check_results(tmp_path)["results"] == saved["results"]  # reused cells keep their evaluations

    # The CLI with the same config (as JSON) resumes too: nothing is retrained.

    from llmgen.cli.main import main
    from llmgen.config import dump_config
    from llmgen.io import atomic_write_json

    atomic_write_json(tmp_path / "sweep.json", dump_config(tiny_sweep(tmp_path)))
    main(["instruction-diversity", "sweep", "--config", str(tmp_path / "sweep.json")])
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps
    assert "ran 0 cell(s), reused 2" in capsys.readouterr().out

    grown = run_sweep(tiny_sweep(tmp_path, num_instructions=[2, 8, 4]), progress=False)
    assert grown["ran"] == 1 and grown["skipped"] == 2
    changed = run_sweep(tiny_sweep(tmp_path, num_instructions=[2], **{"train.lr": 5e-4}), progress=False)
    assert changed["ran"] == 1   # a different setting is a different cell, never a stale reuse


def test_exact_match_report_splits_noop_and_rewrite():
    rows = [{"output": "abc", "noop": True}, {"output": "xbc", "noop": False}, {"output": "aa", "noop": False}]
    rep = exact_match_report(rows, [" abc", "xbc", "ab"])
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert rep["accuracy_noop"] == 1.0 and rep["accuracy_rewrite"] == 0.5
    assert rep["n_noop"] == 1 and rep["n_rewrite"] == 2


@pytest.mark.parametrize("kw,message", [
    (dict(num_instructions=[100]), "budget 16 is smaller than the number of instructions 100"),
    (dict(task=MarkovConfig(input_length=(3, 4), pattern_length=(5, 5))), "pattern longer than input"),
    (dict(num_instructions=[]), "num_instructions"),
    (dict(hidden_size=65, num_heads=2), "divisible"),
])
def test_sweep_bad_input_fails_before_writing(tmp_path, kw, message):
    with pytest.raises(LlmgenError, match=message):
        run_sweep(tiny_sweep(tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_sweep_config_loads_nested_keys_and_rejects_unknown_ones():
    cfg = load_config(SweepConfig, None, {"num_instructions": [5], "task.budget": 50, "task.alphabet": "abc"})
    assert cfg.task.budget == 50 and cfg.num_instructions == [5]
    with pytest.raises(LlmgenError, match="unknown config key 'num_instruction'; did you mean 'num_instructions'"):
        load_config(SweepConfig, None, ["num_instruction=[5]"])
    with pytest.raises(LlmgenError, match="unknown config key 'task.budgett'"):
        load_config(SweepConfig, None, ["task.budgett=5"])
    paper = SweepConfig.paper()
    assert paper.task.input_length == (50, 50) and paper.task.pattern_length == (20, 20)
    assert (paper.num_layers, paper.hidden_size, paper.num_heads, paper.train.lr) == (6, 256, 4, 1e-3)
    assert (paper.train.epochs, SweepConfig.paper(**{"train.epochs": 3}).train.epochs) == (50.0, 3.0)
    with pytest.raises(LlmgenError, match="unknown config key 'epoch'"):
        SweepConfig.paper(epoch=3)


def _scaled_down(task: MarkovConfig, **kw) -> MarkovConfig:
    from dataclasses import replace

    return replace(task, **{"budget": 60, "num_instructions": 30, "test_instructions": 5,
                            "test_examples_per_instruction": 4, **kw})


def test_paper_presets_evaluate_on_inputs_that_contain_the_pattern():
    from llmgen.recipes.instruction_diversity.markov import Rule, generate, parse_domain, satisfies

    data = generate(_scaled_down(SweepConfig.paper().task))
    for row in data.train + data.test:  # every input contains the pattern: no no-ops
        x = row["rule"].split(" -> ")[0]
        assert x in row["input"] and not row["noop"] and len(row["input"]) == 50 and len(x) == 20
    asked = generate(_scaled_down(SweepConfig.paper().task, test_noop_fraction=0.5))
    assert sum(r["noop"] for r in asked.test) == 10  # no-ops only when asked

    semantic = SweepConfig.paper_semantic()
    assert semantic.task.input_length == (500, 500) and semantic.task.pattern_length == (60, 60)
    data = generate(_scaled_down(semantic.task))
    by_label = {parse_domain(d).label: parse_domain(d) for d in semantic.task.domains + semantic.task.test_domains}
    assert {r.domain for r in data.test_rules} <= {"free", "repeated-k2", "periodic-k2", "mirrored-k2"}
    assert all(int(r.domain.rsplit("k", 1)[1]) >= 3 for r in data.train_rules)
    for r in data.train_rules + data.test_rules:
        assert isinstance(r, Rule) and satisfies(by_label[r.domain], r.pattern) and len(r.pattern) == 60
    assert all(not row["noop"] and len(row["input"]) == 500 for row in data.train + data.test)
    with pytest.raises(LlmgenError, match="k_max"):
        SweepConfig.paper_semantic(k_max=2)
