"""The HTML report in a real browser: headless Chromium runs its JS, renders tables and images.

Chromium is Debian's package, installed by ``scripts/install_test_deps.sh`` (``make test`` calls it;
this test calls it too when ``/usr/bin/chromium`` is missing). The test skips only if it cannot be
installed. Two signals catch JavaScript errors: the report's own status element (``window.onerror``
counts, read back with ``--dump-dom``) and the browser's console log on stderr. A negative control
with a deliberate error proves the detection works. The screenshot is kept under
``runs/test-artifacts/`` (or ``$LLMGEN_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmgen.report import write_report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        subprocess.run(["bash", str(REPO / "scripts" / "install_test_deps.sh")], check=False, timeout=900)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian chromium could not be installed (scripts/install_test_deps.sh)")
    return CHROMIUM


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _status(dom: str) -> dict[str, str]:
    m = re.search(r'<div id="llmgen-status"([^>]*)>', dom)
    assert m, "status element missing from the DOM"
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', m.group(1)))


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(chromium, eval_runs, recipe_runs, tmp_path):
    """The report on run folders written by the real runner and recipes (session fixtures in conftest.py)."""
    paths = [eval_runs["default_formats"], eval_runs["default_sampled"], recipe_runs["passn"], recipe_runs["unlearn"]]
    report = write_report(paths, tmp_path / "report.html")
    url = report.as_uri()
    n_png = sum(1 for run in paths for _ in run.rglob("*.png"))

    # JS ran without errors; every table and image is in the DOM and every image decoded
    done = _run(chromium, tmp_path / "profile", "--dump-dom", url + "#q=Paris")
    assert done.returncode == 0, done.stderr[-2000:]
    status = _status(done.stdout)
    assert status["ready"] == "1"
    assert status["js-errors"] == "0"
    assert n_png >= 3 and int(status["images"]) == n_png and status["broken-images"] == "0"
    assert int(status["tables"]) >= 8
    assert _console_errors(done.stderr) == []
    # the #q= filter was applied by the inline JS: one capitals row mentions Paris, no sentiment row does
    assert "1 of 6 rows" in done.stdout
    assert "0 of 12 rows" in done.stdout

    # negative control: a page with a script error is caught by both signals
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("</body>", "<script>notDefined()</script></body>"))
    bad = _run(chromium, tmp_path / "profile", "--dump-dom", broken.as_uri())
    assert _status(bad.stdout)["js-errors"] == "1"
    assert any("notDefined" in line for line in _console_errors(bad.stderr))

    # a screenshot for people: kept outside tmp so that CI can publish it
    artifacts = Path(os.environ.get("LLMGEN_TEST_ARTIFACTS", REPO / "runs" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "report.png"
    done = _run(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2200",
                "--hide-scrollbars", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a rendered page, not a blank one
    shutil.copy(shot, artifacts / "report_screenshot.png")
    shutil.copy(report, artifacts / "report.html")
