"""``make install`` (the set-up of ``make run`` / ``make test``) as a newcomer reads it: one line per
step while it works, the full log in a file, and on failure the log's tail plus one line naming it.

The venv here is a stand-in whose ``pip`` prints hundreds of lines (as a real install does) and
fails on request, so the Makefile's own recipe runs, offline, in a second.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = 400  # lines each stand-in pip call prints


def stand_in_venv(path: Path, failing: str = "") -> Path:
    """A folder that looks like a made venv: ``bin/python`` and a ``bin/pip`` printing NOISE lines,
    exiting 3 when its arguments contain ``failing``."""
    bin_ = path / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\nexit 0\n")
    fail = f'case "$*" in *"{failing}"*) echo "ERROR: no matching distribution" >&2; exit 3;; esac\n' if failing else ""
    (bin_ / "pip").write_text(f"#!/bin/sh\nfor i in $(seq {NOISE}); do echo \"pip says line $i of $*\"; done\n{fail}exit 0\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    return path


def make_install(venv: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", "install", f"VENV={venv}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(autouse=True)
def _needs_make():
    if subprocess.run(["sh", "-c", "command -v make"], capture_output=True).returncode != 0:
        pytest.skip("make is not installed")


def test_set_up_prints_one_line_per_step_and_logs_everything(tmp_path):
    venv = stand_in_venv(tmp_path / "venv")
    r = make_install(venv)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert r.stderr == "" and len(lines) == 5, r.stdout  # the header and four steps
    assert f"log: {venv}/install.log" in lines[0]
    assert all(line.strip().endswith(" s)") and " ... done (" in line for line in lines[1:]), lines
    log = (venv / "install.log").read_text()
    assert log.count("pip says line") == 4 * NOISE and "$ " + str(venv / "bin" / "pip") + " install -e" in log
    assert (venv / ".llmgen-installed").exists()
    again = make_install(venv)  # set up once: the stamp is newer than pyproject.toml and the Makefile
    assert again.returncode == 0 and "install" not in again.stdout.replace("Nothing to be done for 'install'", "")


def test_a_failing_step_names_its_log(tmp_path):
    venv = stand_in_venv(tmp_path / "venv", failing="install -e")
    r = make_install(venv)
    assert r.returncode != 0
    assert r.stdout.splitlines()[-1].strip() == "installing llmgen and its dependencies ... failed", r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: set-up step 'installing llmgen and its dependencies' failed (exit status 3); "
                      f"its full output is in {venv}/install.log"], r.stderr
    assert "ERROR: no matching distribution" in r.stderr  # the cause, from the log's tail
    assert len(r.stdout.splitlines()) + len(r.stderr.splitlines()) < 40
    assert "ERROR: no matching distribution" in (venv / "install.log").read_text()
    assert not (venv / ".llmgen-installed").exists()  # the next make retries the set-up
