"""bench/tofu_format_spread.py: its table reads the committed figures, and its config is cpu.yaml's."""

import importlib.util
import json
from pathlib import Path

import pytest

from llmgen.config import load_config
from llmgen.recipes.npo_unlearning import UnlearnConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("bench_tofu_format_spread", ROOT / "bench" / "tofu_format_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_of_the_committed_figures(driver):
    """Every format of the committed run is one row, before and after, with its interval; the
    summary rows are the JSON's."""
    out = json.loads((ROOT / "docs" / "benchmarks" / "tofu_format_spread_rows8.json").read_text())
    table = driver.markdown(out)
    assert table.count("\n| ") == out["num_formats"] + 1 + 4  # formats, summary header, 2 metrics x 2 models
    first = out["before"]["formats"][0]
    assert first["format"] == "{}" and f"{first['forget.prob']['value']:.3f} [" in table
    assert "`Question: {}\\nAnswer: {}`" in table  # newlines shown escaped, the row stays one line
    assert (ROOT / "docs" / "benchmarks" / "tofu_format_spread.md").read_text().count(table.splitlines()[2]) == 1


def test_config_is_the_committed_cpu_config(driver):
    cfg = load_config(UnlearnConfig, driver.CONFIG, {"data": str(driver.DATA), "forget_split": "forget10",
                                                     "methods": ["npo"], "eval_formats": 10})
    cfg.validate()
    assert driver.CONFIG.name == "cpu.yaml" and (cfg.train.lr, cfg.finetune.lr) == (1e-5, 1e-4)
