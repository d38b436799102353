"""Recipe configs from YAML/JSON files plus ``key=value`` overrides, checked against the dataclass.

A config file's keys are the config dataclass's field names; a nested dataclass (``train:``,
``eval:``) is a nested mapping, and a partial mapping changes only the keys it names (the rest keep
the recipe's defaults). Overrides use dotted keys (``train.lr=1e-5``) and YAML scalars/lists
(``methods=[npo,gd]``; a comma-separated string also fills a list field). Every value is checked
against the field's type hint, so a typo or a wrong type is one ``LlmgenError`` line before any
model loads. :func:`dump_config` is what a run folder's ``config.json`` holds, and that file loads
back through :func:`load_config` (a run is re-runnable from its folder).

This module also holds :class:`EvalSettings`, the evaluation settings every recipe nests under
``eval:``, so that "backend", "max_new_tokens" and the sampling knobs have one name everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from llmgen.backends import backend_class, backend_names
from llmgen.errors import LlmgenError

T = TypeVar("T")


@dataclasses.dataclass
class EvalSettings:
    """How an evaluation runs: the backend and the generation settings of its requests.

    One definition for every evaluation: each recipe nests it under ``eval:`` and ``llmgen eval``'s
    ``llmgen.evaluate.EvalConfig`` extends it, so a setting has one name and one default everywhere.
    ``max_new_tokens`` caps each completion (None: each task's own budget, e.g. 200 for TOFU; a
    recipe whose generation has no such budget sets a number and says so, see :meth:`validate`);
    ``num_samples`` completions per prompt at ``temperature``/``top_p`` (greedy when temperature is
    0); ``limit`` keeps the first N evaluation examples (None: all); ``batch_size`` is the HF
    backend's batch (None: the backend's default, 16). A recipe that fixes one of these (e.g.
    TOFU's greedy decoding) lists them in its ``FIXED_KEYS`` and refuses a changed value
    (:func:`check_fixed`).
    """

    backend: str = "hf"
    max_new_tokens: int | None = None
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    limit: int | None = None
    batch_size: int | None = None

    def validate(self, task_budget: bool = True) -> None:
        """Check values before any model loads. ``task_budget=False``: the recipe generates with no
        task budget to fall back on (its own loop, or tasks it builds with this number), so
        ``max_new_tokens`` must be a number, not None."""
        try:
            backend_class(self.backend)  # the backend registry: every backend, plugins' included
        except LlmgenError:
            raise LlmgenError(f"unknown eval.backend {self.backend!r} (known: {', '.join(backend_names())})") from None
        if self.max_new_tokens is None and not task_budget:
            raise LlmgenError("eval.max_new_tokens must be a number here (null means a task's own budget, "
                              "and this recipe's generation has none)")
        self.check_values("eval.{}".format)

    def check_values(self, key: Callable[[str], str]) -> None:
        """The range checks every evaluation shares; ``key`` names a field in the error line
        (``eval.limit`` in a recipe config, ``--limit`` for ``llmgen eval``)."""
        for name in ("max_new_tokens", "num_samples", "limit", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LlmgenError(f"{key(name)} must be >= 1, got {value}")
        if self.temperature < 0:
            raise LlmgenError(f"{key('temperature')} must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LlmgenError(f"{key('top_p')} must be in (0, 1], got {self.top_p}")


# --- loading -------------------------------------------------------------------------------------


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Iterable[str] | Mapping[str, Any] = (), base: T | None = None) -> T:
    """``cls`` from the file at ``path`` (YAML or JSON; None: the defaults), then ``overrides``.

    ``overrides`` is a list of ``"dotted.key=value"`` strings (values parsed as YAML) or a mapping
    of dotted keys to values already typed (``{"train.lr": 1e-3}``, handy in Python callers).
    ``base`` (e.g. a preset) replaces the class defaults as the starting point.
    """
    data = read_config_file(path) if path is not None else {}
    items = overrides.items() if isinstance(overrides, Mapping) else (split_override(o) for o in overrides)
    for key, value in items:
        hint = key_hint(cls, key)
        if isinstance(value, str) and not isinstance(overrides, Mapping):
            value = parse_value(value, hint)
        _set_dotted(data, key.split("."), value)
    return build(cls, data, base=base)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file; one clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise LlmgenError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise LlmgenError(f"{p}: not valid JSON/YAML ({str(e).splitlines()[0]})") from None
    except Exception as e:  # yaml.YAMLError and friends
        first = " ".join(str(e).split())[:200]
        raise LlmgenError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LlmgenError(f"{p}: a config file holds a mapping of field names, got {type(data).__name__}")
    return data


def split_override(text: str) -> tuple[str, str]:
    """``"train.lr=1e-5"`` → ``("train.lr", "1e-5")``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise LlmgenError(f"an override looks like KEY=VALUE (e.g. train.lr=1e-5), got {text!r}")
    return key.strip(), value


def parse_value(raw: str, hint: Any) -> Any:
    """An override's text as a YAML scalar/list, except where the field takes a string and the text
    is not meant as something else (so ``prompt_template=Q: {question}`` stays a string)."""
    import yaml

    try:
        parsed = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw
    args = _union_args(hint)
    if str not in args:
        return parsed
    if parsed is None and type(None) in args and raw.strip().lower() in ("null", "none", "~"):
        return None
    if isinstance(parsed, (list, tuple)) and any(_origin(a) in (list, tuple) for a in args):
        return parsed
    if isinstance(parsed, dict) and any(_origin(a) is dict or dataclasses.is_dataclass(a) for a in args):
        return parsed
    return raw


def key_hint(cls: type, key: str) -> Any:
    """The type hint of a dotted key; an unknown key is one error listing the known ones."""
    parts = key.split(".")
    hint: Any = cls
    for i, part in enumerate(parts):
        target = _dataclass_of(hint)
        mapping = next((a for a in _union_args(hint) if _origin(a) is dict or a is dict), None)
        if target is None and mapping is not None:  # a key inside a dict field: train.loss_args.beta=0.1
            hint = typing.get_args(mapping)[1] if typing.get_args(mapping) else Any
            continue
        if target is None:
            raise LlmgenError(f"config key {key!r}: {'.'.join(parts[:i])} is not a section")
        hints = typing.get_type_hints(target)
        names = [f.name for f in dataclasses.fields(target) if f.init]
        if part not in names:
            raise _unknown(target, ".".join(parts[:i]), part, names)
        hint = hints[part]
    return hint


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "", base: Any = None) -> T:
    """``cls`` from a mapping of field names (nested mappings for dataclass fields), every value
    checked against its type hint. With ``base`` the mapping changes a copy of ``base``."""
    if not isinstance(data, Mapping):
        raise LlmgenError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of field names, got {data!r}")
    flds = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for name in data:
        if name not in flds:
            raise _unknown(cls, prefix.rstrip("."), str(name), list(flds))
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        nested = _dataclass_of(hints[name])
        if nested is not None and isinstance(value, Mapping):
            current = getattr(base, name) if base is not None else _field_default(flds[name])
            kwargs[name] = build(nested, value, key + ".", current if dataclasses.is_dataclass(current) else None)
        else:
            kwargs[name] = coerce(value, hints[name], key)
    if base is not None:
        for name in _derived_fields(cls) - set(kwargs):
            kwargs[name] = _field_default(flds[name])  # re-derived from the new values by __post_init__
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TypeError as e:  # a required field missing
        raise LlmgenError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` names, or one error naming the key, the type and the value.
    Exact matches win over conversions (so a ``list[str] | str`` field keeps a string a string)."""
    for strict in (True, False):
        for arg in _union_args(hint):
            ok, out = _convert(value, arg, key, strict)
            if ok:
                return out
    raise LlmgenError(f"{key}: expected {type_name(hint)}, got {value!r}")


def _convert(value: Any, hint: Any, key: str, strict: bool) -> tuple[bool, Any]:
    origin, args = _origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, None
    if origin is typing.Literal:
        return value in args, value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return True, value
        return (True, build(hint, value, key + ".")) if isinstance(value, Mapping) else (False, None)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if not strict and isinstance(value, float) and value.is_integer():
            return True, int(value)
        return _from_text(value, int, strict)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (True, float(value)) if not strict or isinstance(value, float) else (False, None)
        return _from_text(value, float, strict)
    if hint is str:
        return isinstance(value, str), value
    if hint is Path:
        return (True, Path(value)) if isinstance(value, (str, Path)) else (False, None)
    if origin in (list, tuple):
        if isinstance(value, str) and not strict:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise LlmgenError(f"{key}: expected {len(args)} values ({type_name(hint)}), got {list(value)!r}")
            return True, tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return True, tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            return False, None
        kt, vt = args if args else (Any, Any)
        return True, {coerce(k, kt, key): coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    return isinstance(value, hint) if isinstance(hint, type) else False, value


def _from_text(value: Any, typ: type, strict: bool) -> tuple[bool, Any]:
    """``"1e-5"`` as a float: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    if strict or not isinstance(value, str):
        return False, None
    try:
        return True, typ(value)
    except ValueError:
        return False, None


def recipe_config(paper: str, name: str) -> Path:
    """The committed config ``recipes/<paper>/configs/<name>.yaml`` (e.g. ``("hyperfitting",
    "tiny")``), wherever the package is installed; a missing one is one error listing the others."""
    from importlib.resources import files

    folder = Path(str(files("llmgen.recipes"))) / paper / "configs"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise LlmgenError(f"no committed config {name!r} for {paper} (known: {', '.join(known) or 'none'})")
    return path


# --- writing and describing ----------------------------------------------------------------------


def dump_config(obj: Any) -> dict[str, Any]:
    """A config as JSON-ready data (tuples as lists, paths as strings): a run folder's
    ``config.json``, which :func:`load_config` reads back into the same config."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    return plain(dataclasses.asdict(obj))


def config_keys(obj: Any, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every key of a config (instance or class), as ``(dotted key, type, default)``, nested
    sections expanded: the list ``--help`` shows (less ``FIXED_KEYS``), so no field is unreachable."""
    cls = obj if isinstance(obj, type) else type(obj)
    inst = cls() if isinstance(obj, type) else obj
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(value) and _dataclass_of(hints[f.name]) is not None:
            out.extend(config_keys(value, f"{prefix}{f.name}."))
        else:
            out.append((prefix + f.name, type_name(hints[f.name]), value))
    return out


def check_fixed(obj: Any) -> None:
    """Refuse a changed value in the keys a recipe sets itself or does not use (its class's
    ``FIXED_KEYS``, dotted), rather than silently ignoring it: ``train.loss`` of an unlearning run
    is each method's loss. ``--help`` leaves these keys out of its list."""
    default = type(obj)()
    changed = [k for k in getattr(type(obj), "FIXED_KEYS", ()) if _get_dotted(obj, k) != _get_dotted(default, k)]
    if changed:
        raise LlmgenError(f"{', '.join(changed)}: set by the {type(obj).__name__} recipe itself (or not used "
                          f"by it); remove {'it' if len(changed) == 1 else 'them'} from the config")


def _get_dotted(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def type_name(hint: Any) -> str:
    """A readable type: ``int | None``, ``list[str]``."""
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    if _origin(hint) in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(hint))
    text = str(hint).replace("typing.", "")
    return text


# --- helpers -------------------------------------------------------------------------------------


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint)


def _union_args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if _origin(hint) in (Union, types.UnionType) else (hint,)


def _dataclass_of(hint: Any) -> type | None:
    for arg in _union_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _derived_fields(cls: type) -> set[str]:
    """Fields whose ``__post_init__`` fills them from others (declared default None, value
    computed: ``MarkovConfig.replacement_length`` follows ``pattern_length``). Changing a copy of
    a default instance must recompute them, not keep the old derived value."""
    try:
        fresh = cls()
    except TypeError:  # required fields: no defaults to compare
        return set()
    return {f.name for f in dataclasses.fields(cls) if f.init and f.default is None and getattr(fresh, f.name) is not None}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {} if child is None else child
        node = child
    node[parts[-1]] = value


def _unknown(cls: type, section: str, name: str, known: list[str]) -> LlmgenError:
    """One line: the unknown key, the closest known key (at this level, or one level down: ``lr``
    for ``train.lr``), and every known key at this level."""
    dot = section + "." if section else ""
    close = difflib.get_close_matches(name, known, n=1)
    hints = typing.get_type_hints(cls)
    nested = [f"{n}.{name}" for n in known if (sub := _dataclass_of(hints[n])) is not None
              and name in {f.name for f in dataclasses.fields(sub)}]
    guess = nested[0] if nested else (close[0] if close else None)
    suggestion = f"; did you mean {dot + guess!r}?" if guess else ""
    return LlmgenError(f"unknown config key {dot + name!r}{suggestion} (known{' in ' + repr(section) if section else ''}: "
                       f"{', '.join(known)})")
