"""``llmgen --plugin``: user modules imported before the command, errors in one line."""

import subprocess
import sys

LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]


def _run(args, **kw):
    return subprocess.run(LLMGEN + args, capture_output=True, text=True, timeout=120, **kw)


def test_plugin_file_and_module_are_imported_before_the_command(tmp_path):
    (tmp_path / "lab_plugin.py").write_text("import sys\nprint('lab plugin in', file=sys.stderr)\n")
    by_file = _run(["--plugin", str(tmp_path / "lab_plugin.py"), "models"])
    assert by_file.returncode == 0 and "lab plugin in" in by_file.stderr
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path), "LLMGEN_PLUGINS": "lab_plugin"}
    by_env = _run(["models"], env=env)
    assert by_env.returncode == 0 and "lab plugin in" in by_env.stderr


def test_bad_plugins_are_one_error_line(tmp_path):
    missing = _run(["--plugin", "no_such_llmgen_plugin", "models"])
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == ["error: cannot import plugin 'no_such_llmgen_plugin': "
                                                   "No module named 'no_such_llmgen_plugin'"]
    (tmp_path / "broken.py").write_text("raise ValueError('boom')\n")
    broken = _run(["--plugin", str(tmp_path / "broken.py"), "models"])
    assert broken.returncode == 2 and broken.stderr.strip().splitlines() == [
        f"error: plugin {str(tmp_path / 'broken.py')!r} failed to load: ValueError: boom"]
    nofile = _run(["--plugin", str(tmp_path / "absent.py"), "models"])
    assert nofile.returncode == 2 and "plugin file not found" in nofile.stderr
