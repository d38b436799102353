"""Atomic file writes, validated JSONL reading, safe file names and run folders.

Every result file is written to a temporary sibling and renamed into place, so a killed run never
leaves a half-written ``results.json`` behind. A run folder is one that llmgen marked as its own
(``RUN_MARKER``, listing the files it wrote there); anything else is the user's and is never
replaced or deleted. A command holds its run folder under an exclusive lock (:class:`RunFolder`),
so two runs never write into one folder at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError

#: The file that marks a folder as an llmgen run folder; it lists the files llmgen wrote there.
RUN_MARKER = ".llmgen-run.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    run = _open_run_of(path)
    if run is not None:
        run.before_write(path)
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
    if run is not None:
        run.record()
    return path


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±Infinity) replaced by None: JSON cannot hold them
    (Python would write ``NaN``, which no strict reader accepts), and where they arise they mean
    "undefined" (the standard error of one example, a score of nothing), which JSON spells null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def check_finite(value: Any, what: str) -> None:
    """Refuse NaN and ±Infinity anywhere in an input (a flag, a config value, a model argument):
    they compare false with every bound, so range checks let them through into the results."""
    if isinstance(value, float) and not math.isfinite(value):
        raise LlmgenError(f"{what} must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{what}.{k}" if what else str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            check_finite(v, what)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            check_finite(getattr(value, name), f"{what}.{name}" if what else name)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return finite(obj.tolist())
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return finite(asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text of ``obj``; non-finite floats become null (:func:`finite`), never ``NaN``."""
    return json.dumps(finite(obj), indent=indent, default=_default, ensure_ascii=False, allow_nan=False)


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


# --- names that become paths ----------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9._+=-]+")


def safe_filename(name: Any) -> str:
    """One path component for ``name`` (a task, config, method, checkpoint label or server model
    name): never empty, never hidden, never ``.``/``..``, never a separator, at most 100 characters.

    A name that is already safe is kept as it is (``formats_sentiment.json``); any other is reduced
    to its safe characters and suffixed with a hash of the whole name, so two names never share a
    file (``a/b`` and ``a_b`` differ) and no name leaves the folder it is written into.
    """
    text = str(name)
    if _SAFE.fullmatch(text) and not text.startswith((".", "-")) and len(text) <= 100:
        return text
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("._-")[:80] or "name"
    return f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def child_path(folder: str | os.PathLike, *names: Any, suffix: str = "") -> Path:
    """``folder/<safe name>/.../<safe name><suffix>``: a path built from names that stays inside
    ``folder`` whatever the names hold (see :func:`safe_filename`)."""
    parts = [safe_filename(n) for n in names]
    if suffix and parts:
        parts[-1] += suffix
    return Path(folder).joinpath(*parts)


# --- output folders ------------------------------------------------------------------------------


def _files_under(folder: Path) -> set[str]:
    """Every file (and symlink) below ``folder`` as a relative POSIX path, links not followed."""
    found: set[str] = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found.update((rel / f).as_posix() for f in files)
        found.update((rel / d).as_posix() for d in dirs if os.path.islink(os.path.join(root, d)))
    found.discard(RUN_MARKER)
    return found


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The run marker of ``folder`` (``{"files": [...], ...}``), or None when llmgen never wrote a
    run there."""
    path = Path(folder) / RUN_MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": []}  # a damaged marker still says the folder is a run; it lists nothing to delete
    files = data.get("files") if isinstance(data, dict) else None
    return {**data, "files": [f for f in files if isinstance(f, str)] if isinstance(files, list) else []}


def _user_files(p: Path) -> list[str]:
    """The files of an existing folder that no llmgen run wrote: all of them without a marker."""
    if read_marker(p) is not None:
        return []
    return sorted(_files_under(p))


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                     run_files: Sequence[str] | None = None) -> Path:
    """Check, before any model loads, that ``path`` can hold a run folder; creates nothing.

    A file in the way, or an ancestor that is a file or not writable, is an error. A folder that
    holds files but no llmgen run marker is the user's: refused, ``overwrite`` or not (a run must
    never replace or delete what it did not write). A folder that holds a finished run is an error
    unless ``overwrite``: a finished run is any of ``run_files`` (names in the folder), or with
    ``run_files=None`` any file the run wrote. Commands call it with their ``--overwrite`` flag;
    commands that resume (the recipes) with ``overwrite=True``.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise LlmgenError(f"output folder {p} is a file")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise LlmgenError(f"output folder {p} is not writable")
        foreign = _user_files(p)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise LlmgenError(f"output folder {p} holds files llmgen did not write ({shown}); they are never "
                              "replaced, --overwrite or not: choose another --output-dir")
        listed = set((read_marker(p) or {"files": []})["files"]) & _files_under(p)
        held = sorted({f.split("/")[0] for f in listed} & set(run_files) if run_files is not None
                      else {f.split("/")[0] for f in listed})
        if held and not overwrite:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise LlmgenError(f"output folder {p} is not empty (holds {shown}); pass --overwrite to replace "
                              "its run, or choose another --output-dir")
        return p
    _check_creatable(p, "output folder")
    return p


def _check_creatable(p: Path, what: str) -> None:
    """``p`` does not exist: its nearest existing ancestor must be a writable folder."""
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LlmgenError(f"cannot create {what} {p}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LlmgenError(f"cannot create {what} {p}: {ancestor} is not writable")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False,
                      inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check, before the work starts, that a single output file (a report, a JSON) can be written.

    An output that is one of the ``inputs`` (a run folder read, or a file in one) is refused,
    ``overwrite`` or not: writing it would replace what is being read. Any other existing file
    needs ``overwrite``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise LlmgenError(f"output file {p} is a folder")
    real = p.resolve()
    for given in inputs:
        src = Path(given).expanduser().resolve()
        if _inside(real, src) and (real == src or p.exists()):
            raise LlmgenError(f"output file {p} is one of the inputs ({given}); write it somewhere else")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise LlmgenError(f"output file {p} exists; pass --overwrite to replace it")
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise LlmgenError(f"output file {p}: {p.parent} is not writable")
        return p
    if p.parent.is_dir():
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise LlmgenError(f"cannot create output file {p}: {p.parent} is not writable")
    elif p.parent.exists():
        raise LlmgenError(f"cannot create output file {p}: {p.parent} is a file")
    else:
        _check_creatable(p.parent, "output folder")
    return p


_OPEN_RUNS: dict[Path, RunFolder] = {}


def _open_run_of(path: Path) -> RunFolder | None:
    """The run folder this process holds that ``path`` lies in, if any."""
    if not _OPEN_RUNS:
        return None
    real = Path(os.path.abspath(path))
    for folder, run in _OPEN_RUNS.items():
        if folder in real.parents:
            return run
    return None


class RunFolder:
    """A command's hold on its run folder, from before the model loads to the end of the run.

    On entry: the checks of :func:`check_output_dir`, then an exclusive ``flock`` on the folder
    (a second run into the same folder is refused in one line while this one runs), and the run
    marker. While held, every :func:`atomic_write_text` into the folder is recorded in the marker,
    with every other file that appeared there since entry (checkpoints, the request cache, plots);
    a file that was there before and is not listed is the user's, and writing over it is refused.
    With ``overwrite``, the files an earlier run wrote (the marker's list, nothing else) are
    removed before the first write, so none of them is left for ``compare`` to read beside the new
    run's. A run that fails before writing anything leaves the folder as it found it.
    ``resume`` (the recipes, ``train --resume``): an earlier run in the folder is continued, not
    refused and not removed. Under torchrun/accelerate only rank 0 (``$RANK``) holds the folder.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 run_files: Sequence[str] | None = None, lock: bool | None = None) -> None:
        self.path = Path(path).expanduser()
        self.overwrite, self.resume, self.run_files = overwrite and not resume, resume, run_files
        self.lock = os.environ.get("RANK", "0") == "0" if lock is None else lock
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        p = self.path
        check_output_dir(p, overwrite=self.overwrite or self.resume, run_files=self.run_files)
        if not self.lock:
            return self
        self.created = not p.exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(p, os.O_RDONLY)
        except OSError as e:
            raise LlmgenError(f"cannot create output folder {p}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            holder = (read_marker(p) or {}).get("pid")
            raise LlmgenError(f"output folder {p} is in use by another llmgen run"
                              f"{f' (pid {holder})' if holder else ''}; wait for it to end or choose another "
                              "--output-dir") from None
        try:  # the folder may have changed between the check and the lock
            check_output_dir(p, overwrite=self.overwrite or self.resume, run_files=self.run_files)
        except BaseException:
            self._unlock(remove=self.created)
            raise
        marker = read_marker(p)
        self.had_marker = marker is not None
        present = _files_under(p)
        self.listed = set(marker["files"]) & present if marker else set()
        self.before = present - self.listed  # left by a killed run before it could list them, or the user's
        self.stale = set(self.listed) if self.overwrite else set()
        self.wrote = False
        self._write_marker()
        _OPEN_RUNS[Path(os.path.abspath(p))] = self
        return self

    def _write_marker(self) -> None:
        data = {"llmgen": "run folder", "pid": os.getpid(), "command": " ".join(sys.argv[1:])[:500],
                "files": sorted(self.listed)}
        tmp = self.path / f"{RUN_MARKER}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / RUN_MARKER)

    def before_write(self, path: Path) -> None:
        """Called before a file is written into the folder: an earlier run's files go first
        (``overwrite``)."""
        self.clear_stale()

    def clear_stale(self) -> None:
        """Remove the files the earlier run listed (``overwrite``), once, before the first write."""
        if not self.stale:
            return
        stale, self.stale = self.stale, set()
        remove_listed(self.path, stale)
        self.listed -= stale
        self._write_marker()

    def remove_under(self, folder: Path) -> None:
        """Remove the files this run's marker lists under ``folder`` (a training cell's restart)."""
        self.clear_stale()
        gone = {f for f in self.listed if _inside(Path(os.path.abspath(self.path / f)), folder)}
        if gone:
            remove_listed(self.path, gone)
            self.listed -= gone
            self._write_marker()

    def record(self) -> None:
        """List every file that appeared in the folder since entry as this run's."""
        self.clear_stale()
        present = _files_under(self.path)
        new = (present - self.before) | (self.listed & present)
        self.wrote = self.wrote or bool(new - self.listed)
        self.listed = new
        self._write_marker()

    def __exit__(self, *exc: Any) -> None:
        if self._fd is None:
            return
        _OPEN_RUNS.pop(Path(os.path.abspath(self.path)), None)
        try:
            self.record()
        except OSError:
            pass
        untouched = not self.wrote and not self.listed
        self._unlock(remove=untouched and self.created, unmark=untouched and not self.had_marker)

    def _unlock(self, remove: bool = False, unmark: bool = False) -> None:
        """Release the lock; a run that wrote nothing takes its marker (and a folder it created) away."""
        if unmark or remove:
            (self.path / RUN_MARKER).unlink(missing_ok=True)
        if remove:
            try:
                self.path.rmdir()
            except OSError:
                pass
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def mark_run(folder: str | os.PathLike) -> None:
    """Mark ``folder`` as an llmgen run folder when a library call starts writing one (a command
    holds it with :class:`RunFolder` instead): a later command may then resume it. A folder that
    already holds files and no marker is left as it is."""
    p = Path(folder)
    if read_marker(p) is not None or (p.is_dir() and any(p.iterdir())):
        return
    p.mkdir(parents=True, exist_ok=True)
    (p / RUN_MARKER).write_text(json.dumps({"llmgen": "run folder", "files": []}) + "\n", encoding="utf-8")


def release_open_runs() -> None:
    """Release every run folder this process holds, as at the end of its run (a process about to
    exit without unwinding: a run that wrote nothing leaves its folder as it found it)."""
    for run in list(_OPEN_RUNS.values()):
        run.__exit__(None, None, None)


def remove_listed(folder: str | os.PathLike, files: Iterable[str]) -> None:
    """Remove ``files`` (relative paths listed in a run marker) from ``folder``, then the folders
    they leave empty: a file of the user's beside them (``final/paper.tex``) stays, with its folder."""
    root = Path(folder)
    dirs: set[Path] = set()
    for rel in files:
        target = root / rel
        if not _inside(Path(os.path.abspath(target)), Path(os.path.abspath(root))) or ".." in Path(rel).parts:
            continue  # a marker edited by hand never deletes outside its folder
        if target.is_symlink() or target.is_file():
            target.unlink(missing_ok=True)
        dirs.update(parent for parent in target.parents if root in parent.parents)
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


def clear_run(folder: str | os.PathLike) -> bool:
    """Before a fresh start in ``folder`` (``llmgen train --overwrite``, a recipe's training cell):
    remove what llmgen wrote there, and only that: the files under ``folder`` that the run marker
    of ``folder`` or of the run folder holding it lists. False when no marker covers ``folder``
    (then nothing is removed: a folder llmgen never marked is the user's)."""
    here = Path(os.path.abspath(folder))
    run = _OPEN_RUNS.get(here) or _open_run_of(here)
    if run is not None:
        run.remove_under(here)
        return True
    for root in (here, *here.parents):
        marker = read_marker(root)
        if marker is not None:
            remove_listed(root, [f for f in marker["files"] if _inside(Path(os.path.abspath(root / f)), here)])
            return True
    return False


def replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``final`` (a model saved beside its temporary name).

    What llmgen wrote in ``final`` earlier goes first (:func:`clear_run`); a file of the user's
    left there (``final/paper.tex``) stays, and the new files are moved in beside it."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        clear_run(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    for root, _dirs, files in os.walk(tmp):
        dest = final / Path(root).relative_to(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(Path(root) / f, dest / f)
    shutil.rmtree(tmp, ignore_errors=True)


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
