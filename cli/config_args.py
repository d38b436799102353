"""``--config FILE`` plus trailing ``key=value`` overrides for every recipe command.

A recipe command declares only the options that are not config fields (``--config``, a stage, a
preset); everything else on its command line is either ``KEY=VALUE`` (any key of the config
dataclass, dotted for nested sections) or a shortcut flag from the command's one ``FLAGS`` table
(flag -> config key; ``tests/cli/test_cli.py`` checks every table against the dataclass fields). The
``--help`` text lists every config key with its default, generated from the dataclass, so no
field is unreachable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from llmgen.errors import LlmgenError

# A flag maps to a config key (it takes a value: ``--lr 1e-5``), to ``(key, value)`` (a switch:
# ``--normalize`` sets ``normalize=true``) or to ``"dict_field."`` (it takes NAME=VALUE:
# ``--loss-arg beta=0.1`` sets ``loss_args.beta=0.1``).
Flags = Mapping[str, "str | tuple[str, str]"]

CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def config_options(cls: type, path: str | Path | None, args: Sequence[str], flags: Flags,
                   positional: str | None = None, base: Any = None) -> Any:
    """The config of one command line: the file (or ``base``, a preset, or the defaults), then the
    shortcut flags and ``key=value`` overrides in the order given."""
    from llmgen.config import load_config
    from llmgen.io import check_finite

    config = load_config(cls, path, flag_overrides(args, flags, positional), base=base)
    check_finite(config, "")  # NaN/Infinity pass every range check; no config value may be one
    check_model_settings(config)
    return config


def check_model_settings(config: Any, prefix: str = "") -> None:
    """Every seed, device, dtype and model of a config (nested sections too), checked before any
    model loads: a negative seed is a numpy traceback after the run, an unknown device a torch one,
    a model folder with custom code a question on stdin."""
    import dataclasses

    from llmgen.models import check_device, check_dtype, check_remote_code, check_seed

    if not dataclasses.is_dataclass(config):
        return
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_model_settings(value, key + ".")
        elif f.name == "seed" or f.name.endswith("_seed"):
            if value is not None:
                check_seed(value, key)
        elif f.name == "seeds" and isinstance(value, list | tuple):
            for v in value:
                check_seed(v, key)
        elif (f.name == "device" or f.name.endswith("_device")) and isinstance(value, str):
            check_device(value, key)
        elif f.name.endswith("dtype") and isinstance(value, str):
            check_dtype(value, "vllm" if getattr(config, "backend", None) == "vllm" else "hf")
        elif f.name == "model" and isinstance(value, str) and value:
            check_remote_code(value, bool(getattr(config, "trust_remote_code", False)))


def flag_overrides(args: Sequence[str], flags: Flags, positional: str | None = None) -> list[str]:
    """``["--lr", "1e-5", "train.epochs=2", "--normalize"]`` → ``["train.lr=1e-5", "train.epochs=2",
    "normalize=true"]``; an unknown flag is one error naming the shortcuts. Bare arguments fill
    the list key ``positional`` when the command has one (``llmgen instruction-diversity dataset a.jsonl``)."""
    import json

    out, bare, i = [], [], 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and not _is_number(token):
            name, eq, inline = token.partition("=")
            target = flags.get(name)
            if target is None:
                known = ", ".join(sorted(flags)) or "none"
                raise LlmgenError(f"unknown option {name!r} (shortcuts: {known}; any config key as KEY=VALUE, "
                                  "see --help)")
            if isinstance(target, tuple):
                out.append(f"{target[0]}={target[1]}")
                i += 1
                continue
            if not eq:
                if i + 1 >= len(args):
                    raise LlmgenError(f"option {name} needs a value")
                inline, i = args[i + 1], i + 1
            if target.endswith("."):  # a dict entry: --loss-arg beta=0.1 -> loss_args.beta=0.1
                if "=" not in inline:
                    raise LlmgenError(f"{name} takes NAME=VALUE, got {inline!r}")
                out.append(target + inline)
            else:
                out.append(f"{target}={inline}")
        elif "=" in token:
            out.append(token)
        elif positional is not None:
            bare.append(token)
        else:
            raise LlmgenError(f"unexpected argument {token!r} (overrides look like KEY=VALUE, e.g. train.lr=1e-5)")
        i += 1
    return out + ([f"{positional}={json.dumps(bare)}"] if bare else [])


def flag_keys(flags: Flags) -> dict[str, str]:
    """Flag -> the config key it sets (what the table test checks)."""
    return {f: t[0] if isinstance(t, tuple) else t.rstrip(".") for f, t in flags.items()}


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def help_epilog(cls: type, flags: Flags) -> str:
    """Every config key with its type and default, then the shortcut flags."""
    from llmgen.config import config_keys

    fixed = set(getattr(cls, "FIXED_KEYS", ()))
    keys = [k for k in config_keys(cls) if k[0] not in fixed]
    width = max(len(k) for k, _, _ in keys)
    lines = ["\b", "Config keys (YAML file keys, or KEY=VALUE overrides; default shown):"]
    lines += [f"  {k:<{width}}  {_show(d)}  ({t})" for k, t, d in keys]
    if fixed:
        lines += ["", f"Set by the recipe itself: {', '.join(sorted(fixed))}."]
    if flags:
        lines += ["", "\b", "Shortcut flags:"]
        lines += [f"  {f:<14} -> {t[0]}={t[1]}" if isinstance(t, tuple) else f"  {f:<14} -> {t}"
                  for f, t in flags.items()]
    return "\n".join(lines)


def _show(value: Any) -> str:
    import json

    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def command_class(target: str, flags: Flags) -> type[TyperCommand]:
    """A Typer command class whose help ends with :func:`help_epilog` of ``"module:Class"``,
    imported only when help is shown (recipe modules import torch)."""

    class ConfigCommand(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            module, _, name = target.partition(":")
            self.epilog = help_epilog(getattr(importlib.import_module(module), name), flags)
            super(TyperCommand, self).format_help(ctx, formatter)  # click's plain layout keeps the key list

    return ConfigCommand


def register_config_command(app: typer.Typer, name: str, func: Callable, target: str, flags: Flags) -> None:
    """Register ``func`` (which takes ``ctx`` and reads ``ctx.args``) as a config command."""
    app.command(name, cls=command_class(target, flags), context_settings=CONTEXT)(func)


CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML/JSON config file (keys below); a run "
                                                          "folder's config.json works too.")
