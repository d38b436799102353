"""The ``llmgen`` command line.

Core commands (``eval``, ``tasks``, ``models``) live in ``llmgen.cli.core``. Each recipe adds its
own command from ``llmgen.cli.<paper>`` through a ``register(app)`` function; every module of the
``llmgen.cli`` package that has one is found by walking the package (no list to keep), imported
only to register, and import torch/transformers inside the command bodies so that
``llmgen --help`` stays fast.

Exit statuses: 0 done, 2 bad usage or bad input (one ``error:`` line, no traceback), 130
interrupted (Ctrl-C), 1 anything else.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmgen.errors import LlmgenError
from llmgen.io import release_open_runs
from llmgen.plugins import load_plugins
from llmgen.processes import (
    adopt_engine_child,
    forward_signals_to_main_thread,
    handled,
    mark_unwound,
    on_hard_exit,
)

# A vLLM engine process spawned by llmgen imports this module first (as its ``__mp_main__``):
# there it arms its death with llmgen's (kill -9 included) and leaves the terminal's process group.
adopt_engine_child()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Fine-tune, prompt and evaluate language models (five papers made usable).")

#: Commands renamed to their paper's name (one name per paper): old name -> new name. The old
#: names stay as hidden commands that say so and exit 2.
RENAMED_COMMANDS = {"formatspread": "format-spread", "unlearn": "npo-unlearning", "passn": "confidence-limiting",
                    "hyperfit": "hyperfitting", "diversity": "instruction-diversity"}

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)
TERMINATED = 143  # ... and by SIGTERM (128 + 15)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as from Ctrl-C: engine processes
    are shut down and nothing is left half-written."""


_TERMINATING: list[bool] = []


def _on_sigterm(signum, frame) -> None:
    handled(signum)
    if not _TERMINATING:  # once: a second SIGTERM must not break the unwinding of the first
        _TERMINATING.append(True)
        raise Terminated()


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show engine and library logs (vLLM, "
                                          "transformers) on stderr; quiet by default")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", envvar="LLMGEN_CACHE", show_envvar=True,
                                                   help="where converted models and the request cache live "
                                                        "(default ~/.cache/llmgen)")] = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="import MODULE (or a .py file) first, so "
                                                     "that what it registers (a loss, an unlearning method, a "
                                                     "backend, a task) can be named; repeatable; default "
                                                     "$LLMGEN_PLUGINS, comma-separated")] = None,
) -> None:
    """Fine-tune, prompt and evaluate language models (five papers made usable)."""
    if cache_dir is not None:
        os.environ["LLMGEN_CACHE"] = str(cache_dir.expanduser())
    set_log_levels(verbose)
    load_plugins(plugin)


def set_log_levels(verbose: bool) -> None:
    """Quiet vLLM and transformers unless asked: results go to stdout, and their INFO/WARNING
    lines (vLLM logs to stdout by default) would bury the results table. Must run before vLLM is
    imported, since vLLM reads its logging settings at import time."""
    level = "INFO" if verbose else "ERROR"
    os.environ["VLLM_LOGGING_LEVEL"] = level
    # vLLM's own handler writes to stdout; route its records to stderr instead.
    os.environ["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "error"
    if not verbose:
        import logging
        import warnings

        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' "Loading weights"
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Generating train split"
        os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' tqdm bars (lm-eval's); llmgen's own bars are rich
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings (vLLM-CPU's "NUMA binding")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the engine's subprocesses too
        warnings.filterwarnings("ignore")
        # vLLM configures its handler late; records logged before that reach Python's last-resort
        # handler, which prints every WARNING.
        logging.getLogger("vllm").setLevel(logging.ERROR)


def quiet_spawned_vllm() -> None:
    """vLLM's engine processes on CPU are spawned: they import the main module (this one, or the
    ``llmgen`` script that imports it) but never run the CLI callback, and vLLM configures its logging
    only after its imports, so its import-time warnings ("Triton is installed, but doesn't include
    CPU backend", once per process) reached Python's last-resort handler. The level the callback put
    in the environment is applied here, at import."""
    level = os.environ.get("VLLM_LOGGING_LEVEL")
    if level in ("ERROR", "CRITICAL"):
        logging.getLogger("vllm").setLevel(level)


quiet_spawned_vllm()


def command_modules(path: list[str] | None = None) -> list[str]:
    """Names of the modules of the ``llmgen.cli`` package (or of the folders ``path``) other than
    this one: each that defines ``register(app)`` adds its commands."""
    if path is None:
        path = importlib.import_module("llmgen.cli").__path__
    names = sorted(info.name for info in pkgutil.iter_modules(path) if info.name != "main")
    return sorted(names, key=lambda n: n not in ("core", "train"))  # core commands first in --help


for _name in command_modules():
    _register = getattr(importlib.import_module(f"llmgen.cli.{_name}"), "register", None)
    if _register is not None:
        _register(app)


def _renamed(old: str, new: str):
    def command(ctx: typer.Context) -> None:
        raise LlmgenError(f"'llmgen {old}' is now 'llmgen {new}'")

    command.__doc__ = f"Renamed: use 'llmgen {new}'."
    return command


for _old, _new in RENAMED_COMMANDS.items():
    app.command(_old, hidden=True, add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(_renamed(_old, _new))


def _exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from every click that may be in use: typer bundles its own (``typer._click``) and
    raises its classes, while plain ``click`` may also be installed. Matching only one of them is
    what once turned every usage error into a traceback."""
    found = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def _interrupted(e: BaseException | None = None) -> SystemExit:
    mark_unwound()
    if isinstance(e, Terminated) or _TERMINATING:
        print("error: terminated", file=sys.stderr)
        return SystemExit(TERMINATED)
    print("error: interrupted", file=sys.stderr)
    return SystemExit(INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: an ``LlmgenError`` becomes one ``error:`` line and exit status 2; click usage
    errors keep click's usage message and status 2; Ctrl-C is one line and status 130."""
    usage_errors = _exception_classes("ClickException")
    aborts = _exception_classes("Abort")
    exits = _exception_classes("Exit")
    if argv is None:  # the program itself (not a caller's main([...])): its process, its signals
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        forward_signals_to_main_thread()
        on_hard_exit(release_open_runs)
    try:
        status = app(args=argv, prog_name="llmgen", standalone_mode=False)
    except LlmgenError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as e:
        raise _interrupted(e) from None
    except usage_errors as e:
        e.show()
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except aborts as e:
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            raise _interrupted(e.__cause__ or e.__context__) from None
        print("error: aborted", file=sys.stderr)
        raise SystemExit(1) from None
    except exits as e:
        status = e.exit_code
    # In non-standalone mode typer turns Ctrl-C into Exit(130) and returns the code.
    if status == INTERRUPTED:
        raise _interrupted()
    if isinstance(status, int) and status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
