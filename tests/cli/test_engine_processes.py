"""Issue 27 item 11: every way ``llmgen`` ends also ends the vLLM engine processes it started.

Each case starts ``llmgen eval --backend vllm`` on the tiny model in its own session (its process
group plays the terminal's foreground group), waits until the engine's subprocess (vLLM V1's
EngineCore) runs, then signals: Ctrl-C to the group, SIGINT or SIGTERM to llmgen alone, kill -9
of llmgen. Afterwards no process llmgen started may remain. The engine is stopped during its start,
so no case pays for a whole engine start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.cli.test_cli import LLMGEN, REPO, error_lines

pytestmark = pytest.mark.vllm  # starts (and stops) vLLM engines


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.mark.parametrize("how", ["ctrl_c_group", "sigint_parent", "sigterm_parent", "kill9_parent"])
def test_every_exit_ends_the_engine_processes(how, tmp_path, tiny_model_dir):
    err = (tmp_path / "stderr").open("w")
    run = tmp_path / "run"
    proc = subprocess.Popen(
        LLMGEN + ["eval", "--model", tiny_model_dir, "--backend", "vllm", "--tasks", "arithmetic", "--limit", "2",
                  "--no-cache", "--output-dir", str(run)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        env={**os.environ, "LLMGEN_CACHE": str(tmp_path / "cache")},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.time() + 240
        # the engine's subprocess (multiprocessing's spawn_main: EngineCore) is up, its model not
        # loaded yet: the moment a user presses Ctrl-C
        while time.time() < deadline and proc.poll() is None:
            for p in _descendants(proc.pid):
                seen.setdefault(p.pid, p)
            if any("spawn_main" in " ".join(_cmd(p)) or "EngineCore" in _name(p) for p in _alive(list(seen.values()))):
                break
            time.sleep(0.1)
        assert seen and proc.poll() is None, "no engine process started"
        time.sleep(1.0)
        for p in _descendants(proc.pid):
            seen.setdefault(p.pid, p)
        t0 = time.time()
        if how == "ctrl_c_group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal({"sigint_parent": signal.SIGINT, "sigterm_parent": signal.SIGTERM,
                              "kill9_parent": signal.SIGKILL}[how])
        proc.wait(timeout=60)
        took = time.time() - t0
        left = []
        for _ in range(50):  # the kernel delivers the parent-death signal at once; allow for reaping
            left = _alive(list(seen.values()))
            if not left:
                break
            time.sleep(0.2)
    finally:
        for p in _alive(list(seen.values())):
            p.kill()
        if proc.poll() is None:
            proc.kill()
        err.close()
    stderr = (tmp_path / "stderr").read_text()
    assert not left, f"left running after {how}: {[(p.pid, _cmd(p)) for p in left]}"
    assert took < 15, took
    if how == "kill9_parent":
        assert proc.returncode == -signal.SIGKILL
        return
    status, line = (143, "error: terminated") if how == "sigterm_parent" else (130, "error: interrupted")
    assert proc.returncode == status, stderr
    assert error_lines(stderr) == [line] and "Traceback" not in stderr, stderr
    assert not run.exists()  # nothing was written


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""
