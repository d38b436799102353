"""The committed SNI task files of the FormatSpread benchmark load through the project's loader.

Each file in ``recipes/format_spread/data/sni/`` must hold the instance count its README states,
load with ``load_sni_task`` with no instance skipped, and its original format must render every
instance's input back to the file's text (the reference structure read the raw input exactly).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmgen.config import load_config
from llmgen.recipes.format_spread import FormatSpreadConfig
from llmgen.tasks.classification import DEMO_POOL, load_sni_task

ROOT = Path(__file__).parents[3]
DATA = ROOT / "recipes" / "format_spread" / "data" / "sni"
CONFIG = ROOT / "recipes" / "format_spread" / "configs" / "sni_cpu.yaml"


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
    layout = task.prompt_layout()
    rendered = [task.original_format.render(layout, doc, output=False) for doc in task.docs]
    assert rendered == [row["input"] for row in raw["Instances"]]


def test_config_points_at_a_committed_file():
    cfg = load_config(FormatSpreadConfig, CONFIG)
    assert cfg.mode == "exhaustive" and cfg.demos_from == "instances"
    assert (ROOT / cfg.task).is_file() and Path(cfg.task).parent == Path("recipes/format_spread/data/sni")
