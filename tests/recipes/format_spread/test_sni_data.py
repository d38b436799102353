"""The committed SNI task files of the FormatSpread benchmark load through the project's loader.

Each file in ``recipes/format_spread/data/sni/`` must hold the instance count its README states,
load with ``load_sni_task`` with no instance skipped, and its original format must render every
instance's input back to the file's text (the reference structure read the raw input exactly).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from llmgen.config import load_config
from llmgen.prompts.render import prompt_structure
from llmgen.recipes.format_spread import FormatSpreadConfig
from llmgen.tasks.classification import DEMO_POOL, load_sni_task

ROOT = Path(__file__).parents[3]
DATA = ROOT / "recipes" / "format_spread" / "data" / "sni"
CONFIG = ROOT / "recipes" / "format_spread" / "configs" / "sni_cpu.yaml"
BENCH = ROOT / "bench"


def readme_counts() -> dict[str, int]:
    """``file -> instances kept`` from the README's table rows (``| `file.json` | `commit` | N | ...``)."""
    rows = re.findall(r"^\| `(task\w+\.json)` \| `[0-9a-f]{40}` \| (\d+) \|", (DATA / "README.md").read_text(),
                      flags=re.MULTILINE)
    return {name: int(n) for name, n in rows}


def test_readme_lists_every_committed_file():
    counts = readme_counts()
    assert len(counts) == 5
    assert sorted(counts) == sorted(p.name for p in DATA.glob("*.json"))
    assert sum(p.stat().st_size for p in DATA.glob("*.json")) < 1_000_000


@pytest.mark.parametrize("name, count", sorted(readme_counts().items()))
def test_file_loads_with_its_instances(name: str, count: int):
    raw = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert len(raw["Instances"]) == count
    assert raw["Definition"] and raw["Positive Examples"]
    task = load_sni_task(DATA / name)
    assert task.skipped == 0 and len(task.docs) == count
    # the first 10 of the shuffle are the demonstration pool; the config evaluates at most the rest
    assert count - DEMO_POOL >= load_config(FormatSpreadConfig, CONFIG).eval.limit
    layout = prompt_structure(task).layout
    rendered = [prompt_structure(task).original.render(layout, doc, output=False) for doc in task.docs]
    assert rendered == [row["input"] for row in raw["Instances"]]


def test_config_points_at_a_committed_file():
    cfg = load_config(FormatSpreadConfig, CONFIG)
    assert cfg.mode == "exhaustive" and cfg.demos_from == "instances"
    assert (ROOT / cfg.task).is_file() and Path(cfg.task).parent == Path("recipes/format_spread/data/sni")


def _driver():
    import sys

    sys.path.insert(0, str(BENCH))  # the driver imports bench/seeds.py and bench/format_spread.py
    spec = importlib.util.spec_from_file_location("bench_format_spread_sni", BENCH / "format_spread_sni.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cut_keeps_the_source_text_up_to_the_nth_instance(tmp_path):
    """How the files were made: the source's own characters up to the N-th instance, then the closing."""
    source = ('{\n    "Definition": ["d \\"q\\""],\n    "Instances":[\n        {"input": "a, }", "output": ["x"]},'
              '\n\t\t\t{"input": "b", "output": ["y"]},\n\t\t\t{"input": "c", "out')
    page = tmp_path / "page.lit"
    page.write_text(json.dumps(source)[1:-1] + "\n")  # as read_file returns it: the JSON string literal
    driver = _driver()
    text = driver.cut_instances(driver.join_pages([page]), 2)
    cut_at = source.index('"output": ["y"]}') + len('"output": ["y"]}')
    assert text == source[:cut_at] + "\n    ]\n}\n"
    assert [i["input"] for i in json.loads(text)["Instances"]] == ["a, }", "b"]
    with pytest.raises(ValueError):  # the third instance is cut off in the page
        driver.cut_instances(source, 3)
