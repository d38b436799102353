"""Issue 13: `llmgen eval` and every recipe write the one results schema (``llmgen.results``).

Each case writes a real run folder on the tiny model (the same tiny configs as the recipes' own
tests) and ``check_results`` checks it; the checker itself is tested on hand-made folders that
break one rule each, so a pass means something.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, atomic_write_jsonl
from llmgen.results import RESULTS_KEYS, SAMPLE_KEYS, check_results

# --- the checker on hand-made folders --------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    out = {"model": "m", "backend": {"name": "hf"}, "versions": {}, "seed": 0, "timings": {},
           "results": {"t": {"acc": 0.5}}, "uncertainty": {"t": {"acc": {"stderr": 0.5}}}, "n_samples": {"t": 2},
           "tasks": {"t": {"name": "t"}}}
    atomic_write_json(run / "results.json", out)
    atomic_write_jsonl(run / "samples.jsonl", [{"task": "t", "doc_id": i, "prompt": "p", "target": "x",
                                                "responses": ["x"], "metrics": {"acc": float(i)}} for i in range(2)])
    return run


def _edit(run: Path, name: str, fn) -> None:
    path = run / name
    if name == "results.json":
        data = json.loads(path.read_text())
        fn(data)
        atomic_write_json(path, data)
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        fn(rows)
        atomic_write_jsonl(path, rows)


def test_checker_accepts_a_good_folder(tmp_path):
    assert check_results(_good(tmp_path))["results"] == {"t": {"acc": 0.5}}


@pytest.mark.parametrize(("name", "fn", "match"), [
    ("results.json", lambda d: d.pop("n_samples"), "missing key 'n_samples'"),
    ("results.json", lambda d: d["results"]["t"].update(acc="high"), "is not a number"),
    ("results.json", lambda d: d["uncertainty"].pop("t"), "one entry per evaluation"),
    ("results.json", lambda d: d["uncertainty"]["t"].update(f1={}), "'f1' that results"),
    ("results.json", lambda d: d.update(n_samples={"t": 3}), "2 rows of 't'"),
    ("samples.jsonl", lambda rows: rows[1].pop("prompt"), "missing field 'prompt'"),
    ("samples.jsonl", lambda rows: rows[0].update(task="other"), "not an evaluation"),
    ("samples.jsonl", lambda rows: rows[0].update(metrics={"acc": "yes"}), "'metrics' must map"),
    ("samples.jsonl", lambda rows: rows[0].update(responses="x"), "'responses' must be a list"),
])
def test_checker_names_the_broken_rule(tmp_path, name, fn, match):
    run = _good(tmp_path)
    _edit(run, name, fn)
    with pytest.raises(LlmgenError, match=match):
        check_results(run)


def test_checker_needs_both_files(tmp_path):
    with pytest.raises(LlmgenError, match="no results.json"):
        check_results(tmp_path)
    run = _good(tmp_path)
    (run / "samples.jsonl").unlink()
    with pytest.raises(LlmgenError, match="samples.jsonl"):
        check_results(run)


# --- every writer ----------------------------------------------------------------------------------


def _eval(tiny_model_dir: str, out: Path) -> Path:
    from llmgen.cli.main import main

    main(["eval", "--model", tiny_model_dir, "--tasks", "arithmetic,sentiment", "--limit", "3", "--no-cache",
          "--num-samples", "2", "--temperature", "1.0", "--output-dir", str(out)])
    return out


def _tiny(recipe: str, cls, overrides: dict):
    """The recipe's committed tiny config (as its own tests use it) with ``overrides``."""
    from llmgen.config import load_config, recipe_config

    return load_config(cls, recipe_config(recipe, "tiny"), overrides)


def _format_spread(tiny_model_dir: str, out: Path) -> Path:
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    run(_tiny("format_spread", FormatSpreadConfig, {"model": tiny_model_dir, "output_dir": str(out)}))
    return out


def _hyperfitting(tiny_model_dir: str, out: Path) -> Path:
    from llmgen.recipes.hyperfitting import HyperfittingConfig, run

    text = out.parent / "text.txt"
    words = "the a cat dog sat ran on under mat log tree house river".split()
    text.write_text("\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(30)) for i in range(20)))
    run(_tiny("hyperfitting", HyperfittingConfig, {"model": tiny_model_dir, "text_source": str(text),
                                                   "output_dir": str(out), "train.epochs": 1}))
    return out


def _instruction_diversity(tiny_model_dir: str, out: Path) -> Path:
    from llmgen.recipes.instruction_diversity import SweepConfig, run_sweep

    run_sweep(_tiny("instruction_diversity", SweepConfig, {"output_dir": str(out), "num_instructions": [2]}),
              progress=False)
    return out


WRITERS = {"eval": _eval, "format_spread": _format_spread, "hyperfitting": _hyperfitting,
           "instruction_diversity": _instruction_diversity}


@pytest.mark.slow
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_run_folder_is_in_the_one_schema(writer, tiny_model_dir, tmp_path):
    out = check_results(WRITERS[writer](tiny_model_dir, tmp_path / writer))
    assert set(RESULTS_KEYS) <= set(out)
    rows = [json.loads(line) for line in (tmp_path / writer / "samples.jsonl").read_text().splitlines()]
    assert rows and all(set(SAMPLE_KEYS) <= set(r) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["passn", "unlearn"])
def test_recipe_run_folder_is_in_the_one_schema(recipe, recipe_runs):
    """The session's recipe runs (conftest ``recipe_runs``): pass@N (CE and DCO) and NPO unlearning."""
    out = check_results(recipe_runs[recipe])
    assert set(RESULTS_KEYS) <= set(out)
