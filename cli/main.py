"""The ``llmgen`` command line.

Core commands (``eval``, ``tasks``, ``models``) live in ``llmgen.cli.core``. Each recipe adds its
own command from ``llmgen.cli.<name>`` through a ``register(app)`` function; the modules are
imported only to register, and import torch/transformers inside the command bodies so that
``llmgen --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from llmgen.errors import LlmgenError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune, prompt and evaluate language models (five papers made usable).")

COMMAND_MODULES = ["core", "train", "formatspread", "unlearn", "passn", "hyperfit", "diversity", "analysis"]

for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"llmgen.cli.{_name}") is not None:
        importlib.import_module(f"llmgen.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: an ``LlmgenError`` becomes one ``error:`` line and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except LlmgenError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        if isinstance(e, click.exceptions.Abort):
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
