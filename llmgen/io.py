"""Atomic file writes and validated JSONL reading.

Every result file is written to a temporary sibling and renamed into place, so a killed run never
leaves a half-written ``results.json`` behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; results are meant to be shared like any other file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_default, ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    return atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LlmgenError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LlmgenError(f"malformed JSON in {path}: {e.msg} at line {e.lineno}") from None


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = (), allow_empty: bool = False) -> list[dict]:
    """Read a JSONL file of objects, checking that each row has the ``required`` fields."""
    path = Path(path)
    if not path.is_file():
        raise LlmgenError(f"file not found: {path}")
    rows: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LlmgenError(f"malformed JSONL in {path} line {lineno}: {e.msg}") from None
            if not isinstance(row, dict):
                raise LlmgenError(f"malformed JSONL in {path} line {lineno}: expected an object")
            missing = [k for k in required if k not in row]
            if missing:
                raise LlmgenError(f"{path} line {lineno}: missing field {missing[0]!r}")
            rows.append(row)
    if not rows and not allow_empty:
        raise LlmgenError(f"empty dataset: {path} has no rows")
    return rows
