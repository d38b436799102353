"""The package as a user installs it: a wheel built from the sources, installed into a fresh venv.

The checkout runs as an editable install, which reads configs and the task catalogue straight from
the source tree, so a file the wheel leaves out goes unnoticed there. Here the wheel is built
without warnings (setuptools warns when a folder of package data is not a package it knows, and may
then leave it out), holds every committed recipe config and catalogue YAML, and runs from a fresh
venv: ``llmgen tasks`` and a recipe whose ``--config`` is the installed copy of a committed config.

Offline: the venv is made without pip, the wheel is installed by this venv's pip (``--python``,
``--no-index``) and the dependencies come from this venv's site-packages through a ``.pth`` line.
A plain ``.pth`` line adds a folder without running the ``.pth`` files in it, so this venv's
editable finder (which maps ``llmgen`` to the checkout) is not installed there; the test checks
that ``llmgen`` and its data are imported from the fresh venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "llmgen", "evals", "recipes", "cli")
"""What the wheel is built from (pyproject's package-dir): a copy, so the build leaves the checkout clean."""
WARNING = re.compile(r"warning|would be ignored|deprecat", re.IGNORECASE)

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    """The environment of the subprocesses: offline, no user site, no path from the caller."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel built from a copy of the sources, and the build's log."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(item, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    (whl,) = out.glob("llmgen-*.whl")
    return whl, log


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A venv holding llmgen only from the wheel; its dependencies through a .pth to this venv."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Installed before the .pth exists: pip then sees no other llmgen to replace.
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", str(wheel[0])], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_llmgen_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return venv


def _committed_yamls() -> set[str]:
    """Every committed config and catalogue YAML, as its path inside the installed package."""
    configs = {f"llmgen/recipes/{p.relative_to(ROOT / 'recipes')}" for p in (ROOT / "recipes").glob("*/configs/*.yaml")}
    catalogue = {f"llmgen/tasks/catalogue/{p.name}" for p in (ROOT / "llmgen" / "tasks" / "catalogue").glob("*.yaml")}
    return configs | catalogue


def test_wheel_builds_without_warnings(wheel):
    _, log = wheel
    assert not [line for line in log.splitlines() if WARNING.search(line)], log[-3000:]


def test_wheel_holds_every_module_config_and_catalogue_yaml(wheel):
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    assert len(_committed_yamls()) >= 20 and _committed_yamls() <= names, sorted(_committed_yamls() - names)
    modules = {f"llmgen/{p.relative_to(ROOT / 'llmgen')}" for p in (ROOT / "llmgen").rglob("*.py")}
    modules |= {f"llmgen/{d}/{p.relative_to(ROOT / d)}" for d in ("evals", "recipes", "cli") for p in (ROOT / d).rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    metadata = zipfile.ZipFile(wheel[0]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_installed_wheel_lists_tasks_and_runs_a_recipe_config(fresh_venv, tiny_model_dir, tmp_path):
    """From a folder outside the checkout, with an empty cache: nothing can come from the sources."""
    venv, work, cache = fresh_venv, tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    env = _env(LLMGEN_CACHE=str(cache))
    python, llmgen = str(venv / "bin" / "python"), str(venv / "bin" / "llmgen")

    where = subprocess.run([python, "-c", "import llmgen, llmgen.cli, llmgen.recipes; from llmgen.config import "
                            "recipe_config; print(llmgen.__file__, llmgen.cli.__file__, llmgen.recipes.__file__, "
                            "recipe_config('format_spread', 'tiny'))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    paths = where.stdout.split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in paths), paths
    config = paths[-1]

    tasks = subprocess.run([llmgen, "tasks"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert tasks.returncode == 0, tasks.stderr
    names = {line.split()[0] for line in tasks.stdout.splitlines() if line.strip()}
    catalogue = {"gsm8k", "math500", "alpaca", "openorca", "tofu_qa_forget01", "hendrycks_math_algebra"}
    assert catalogue | {"arithmetic", "tofu_forget01"} <= names, tasks.stdout

    out = work / "run"
    run = subprocess.run([llmgen, "format-spread", "--config", config, f"model={tiny_model_dir}", "eval.backend=hf",
                          f"output_dir={out}"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "spread:" in run.stdout
    written = (out / "config.json").read_text()
    assert '"num_formats": 3' in written and '"task": "parity"' in written  # the installed tiny.yaml's values
