"""Registries fill themselves by walking their package (issue 13 item 4): the CLI commands, the
training losses and the task families. Each is checked on the current names and on a module
dropped into the package's search path (a new module needs no list to be edited)."""

from __future__ import annotations

import textwrap

import pytest

import llmgen.cli
import llmgen.tasks
import llmgen.training.losses as losses
from llmgen.cli.main import RENAMED_COMMANDS, app, command_modules, main
from llmgen.errors import LlmgenError

PAPER_COMMANDS = ["format-spread", "npo-unlearning", "confidence-limiting", "hyperfitting", "instruction-diversity"]


def _registered_commands() -> set[str]:
    return {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}


def test_cli_finds_every_command_module_and_paper_command():
    import importlib

    # helper modules of the package (e.g. config_args) are walked too; only modules with register(app) add commands
    with_register = {n for n in command_modules() if hasattr(importlib.import_module(f"llmgen.cli.{n}"), "register")}
    assert with_register == {"core", "train", "analysis", "format_spread", "npo_unlearning",
                             "confidence_limiting", "hyperfitting", "instruction_diversity"}
    assert {"eval", "tasks", "models", "train", "compare", "report", *PAPER_COMMANDS} <= _registered_commands()


def test_cli_finds_a_module_dropped_in_the_package(tmp_path):
    (tmp_path / "my_paper.py").write_text("def register(app):\n    pass\n")
    assert "my_paper" in command_modules([*llmgen.cli.__path__, str(tmp_path)])


@pytest.mark.parametrize("old", sorted(RENAMED_COMMANDS))
def test_old_command_names_say_the_new_one_and_exit_2(old, capsys):
    with pytest.raises(SystemExit) as e:
        main([old, "--model", "x", "sweep"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: 'llmgen {old}' is now 'llmgen {RENAMED_COMMANDS[old]}'"]
    assert RENAMED_COMMANDS[old] in PAPER_COMMANDS


def test_losses_found_by_walking_the_package():
    assert {m.rsplit(".", 1)[1] for m in losses.loss_modules()} >= {"unlearning", "dco"}
    for name in ("ce", "npo", "npo_rt", "ga", "simnpo", "dco", "dco_a"):
        assert callable(losses.get_loss(name))


def test_a_loss_module_dropped_in_the_package_is_found(tmp_path, monkeypatch):
    (tmp_path / "zz_test_loss.py").write_text(textwrap.dedent("""
        from llmgen.training.losses import ce_loss, register_loss
        register_loss("zz_dropped_in")(ce_loss)
    """))
    monkeypatch.setattr(losses, "__path__", [*losses.__path__, str(tmp_path)])
    with pytest.raises(LlmgenError):
        losses.LOSSES.get("zz_dropped_in")
    assert losses.get_loss("zz_dropped_in") is losses.ce_loss


def test_tasks_found_by_walking_the_package():
    names = set(llmgen.tasks.list_tasks())
    assert {"sentiment", "parity", "comparison", "math_generated_d1", "math_generated_d2", "math_generated_d3",
            "tofu_forget01", "tofu_forget05", "tofu_forget10", "arithmetic"} <= names


def test_a_task_family_dropped_in_the_package_is_found(tmp_path, monkeypatch):
    (tmp_path / "zz_family.py").write_text(textwrap.dedent("""
        def register_tasks(registry):
            from llmgen.tasks import make_arithmetic
            registry.register("zz_dropped_in", lambda: make_arithmetic(n=3))
    """))
    monkeypatch.setattr(llmgen.tasks, "__path__", [*llmgen.tasks.__path__, str(tmp_path)])
    monkeypatch.setattr(llmgen.tasks, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(llmgen.tasks, "TASKS", type(llmgen.tasks.TASKS)("task"))
    llmgen.tasks.TASKS.register("arithmetic", lambda: llmgen.tasks.make_arithmetic())
    task = llmgen.tasks.get_task("zz_dropped_in")
    assert len(task.docs) == 3
    assert "tofu_forget10" in llmgen.tasks.list_tasks()  # the shipped families still register
