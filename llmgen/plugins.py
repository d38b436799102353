"""User plugins: modules the user names (``llmgen --plugin MODULE`` or ``$LLMGEN_PLUGINS``) that
register their own losses, unlearning methods, backends, tasks or metrics in llmgen's registries.

A plugin is ordinary Python that the user asked to run, imported once before the command runs;
nothing else outside llmgen's package is ever imported (a model folder's code runs only with
``trust_remote_code``). A name is a module on ``sys.path`` (``my_lab.losses``) or a ``.py`` file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from llmgen.errors import LlmgenError

ENV = "LLMGEN_PLUGINS"  # comma-separated, read when no --plugin is given

_loaded: dict[str, ModuleType] = {}


def plugin_names(given: Iterable[str] | None = None) -> list[str]:
    """The plugins to load: the ``--plugin`` values, else ``$LLMGEN_PLUGINS`` split on commas."""
    names = list(given or []) or os.environ.get(ENV, "").split(",")
    return [n.strip() for n in names if n and n.strip()]


def load_plugin(name: str) -> ModuleType:
    """Import one plugin (once); a missing module or file, or an error inside it, is one error line."""
    if name in _loaded:
        return _loaded[name]
    try:
        if name.endswith(".py"):
            path = Path(name).expanduser()
            if not path.is_file():
                raise LlmgenError(f"plugin file not found: {path}")
            spec = importlib.util.spec_from_file_location(f"llmgen_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[spec.name] = module  # type: ignore[union-attr]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(name)
    except LlmgenError:
        raise
    except ModuleNotFoundError as e:
        raise LlmgenError(f"cannot import plugin {name!r}: {e}") from None
    except Exception as e:  # the plugin's own code failed: say which plugin, keep its message
        raise LlmgenError(f"plugin {name!r} failed to load: {type(e).__name__}: {e}") from None
    _loaded[name] = module
    return module


def load_plugins(given: Iterable[str] | None = None) -> list[ModuleType]:
    """Import every plugin named by ``--plugin`` (or ``$LLMGEN_PLUGINS``), in order."""
    return [load_plugin(n) for n in plugin_names(given)]
