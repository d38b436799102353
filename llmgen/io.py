"""Atomic file writes and validated JSONL reading.

Every result file is written to a temporary sibling and renamed into place, so a killed run never
leaves a half-written ``results.json`` behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a file where a folder should be, no permission, ...
        raise LlmgenError(f"cannot write {path}: {e.strerror or e}") from None
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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing file or bytes that are not UTF-8 are one clear error
    (with the line number), not a ``UnicodeDecodeError`` traceback from deep inside a loader."""
    path = Path(path)
    if not path.is_file():
        raise LlmgenError(f"{what} not found: {path}")
    return _decode(path, path.read_bytes())


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise LlmgenError(f"{path} line {lineno} is not UTF-8 text (byte 0x{data[e.start]:02x}); "
                          "save the file as UTF-8") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LlmgenError(f"malformed JSON in {path}: {e.msg} at line {e.lineno}") from None


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = (), allow_empty: bool = False) -> list[dict]:
    """Read a JSONL file of objects, checking that each row has the ``required`` fields."""
    path = Path(path)
    rows: list[dict] = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):  # not splitlines: U+2028 may sit in a string
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


# --- output folders ------------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                     run_files: Sequence[str] | None = None) -> Path:
    """Check, before any model loads, that ``path`` can hold a run folder; creates nothing.

    A file in the way, or an ancestor that is a file or not writable, is an error. A folder that
    already holds a run is an error unless ``overwrite``: a second run must not silently mix its
    results with, or replace, an earlier run's. A run is any of ``run_files`` (names in the
    folder), or with ``run_files=None`` any entry but hidden ones (temporary files). Commands
    call it with their ``--overwrite`` flag; the library functions call it with ``overwrite=True``.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise LlmgenError(f"output folder {p} is a file")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise LlmgenError(f"output folder {p} is not writable")
        held = sorted(e.name for e in p.iterdir() if not e.name.startswith(".")
                      and (run_files is None or e.name in run_files))
        if held and not overwrite:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise LlmgenError(f"output folder {p} is not empty (holds {shown}); pass --overwrite to replace "
                              "its run, or choose another --output-dir")
        return p
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LlmgenError(f"cannot create output folder {p}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LlmgenError(f"cannot create output folder {p}: {ancestor} is not writable")
    return p


def check_output_file(path: str | os.PathLike) -> Path:
    """Check, before the work starts, that a single output file (a report, a JSON) can be written."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise LlmgenError(f"output file {p} is a folder")
    check_output_dir(p.parent, overwrite=True)
    return p


def default_run_dir(name: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``: where a command saves its run when given no
    ``--output-dir``, so that no result is lost and no earlier run is overwritten."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "run"
    base = Path(root) / f"{slug[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
