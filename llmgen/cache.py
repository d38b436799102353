"""A SQLite cache of generations and scores, so an interrupted run resumes without recomputing.

The store only: ``llmgen.backends.cached.CachedBackend`` builds the keys (model fingerprint,
adapter, backend, dtype, context length, request kind, the request and its sampling settings, seed
included) and commits after every backend batch, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError


def request_key(**parts: Any) -> str:
    """sha256 of the parts as canonical JSON (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class RequestCache:
    """Key → JSON value store. ``path=None`` keeps nothing (a disabled cache)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = _open(self.path)
        self.hits = 0
        self.misses = 0
        #: wall seconds spent through this cache, for results.json ``timings``: "cache" (keys, the
        #: model fingerprint, lookups and commits) and one entry per request kind (the backend's work)
        self.seconds: dict[str, float] = {}

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if self._db is None or not keys:
            self.misses += len(keys)
            return {}
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            q = f"SELECT key, value FROM cache WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v in self._db.execute(q, chunk):
                found[k] = json.loads(v)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        if self._db is None or not items:
            return
        self._db.executemany("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)",
                             [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()])
        self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return self._db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _connect(path: Path) -> sqlite3.Connection:
    """Open the store and check it: a file that is not an SQLite database, or one whose pages are
    damaged, raises ``sqlite3.DatabaseError`` here, not in the middle of a run."""
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.commit()
        ok = db.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise sqlite3.DatabaseError(str(ok[0] if ok else "quick_check failed"))
    except BaseException:
        db.close()
        raise
    return db


def _check_writable(path: Path) -> None:
    """The cache's folder must be (or become) a writable folder, and the file a writable file."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise LlmgenError(f"request cache folder {folder} is a file (set --cache-dir or LLMGEN_CACHE to a folder)")
    if path.is_dir():
        raise LlmgenError(f"request cache {path} is a folder, not a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LlmgenError(f"cannot create the request cache folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LlmgenError(f"request cache folder {folder} is not writable (use --no-cache, or --cache-dir DIR)")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise LlmgenError(f"request cache {path} is not writable (use --no-cache, or --cache-dir DIR)")


def _open(path: Path) -> sqlite3.Connection:
    """Open the store at ``path``; a damaged one (truncated, random bytes) is moved aside with one
    warning and a fresh one takes its place, so the run goes on (it only recomputes)."""
    _check_writable(path)
    try:
        return _connect(path)
    except sqlite3.OperationalError as e:  # locked, read-only, cannot open: the user's to fix, not damage
        raise LlmgenError(f"cannot open the request cache {path}: {e} (use --no-cache, or --cache-dir DIR)") from None
    except sqlite3.DatabaseError as e:  # not a database, malformed pages
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                os.replace(src, Path(f"{aside}{suffix}"))
        print(f"warning: request cache {path} is damaged ({e}); moved it to {aside.name} and started a fresh one",
              file=sys.stderr)
        try:
            return _connect(path)
        except sqlite3.DatabaseError as e2:
            raise LlmgenError(f"cannot open the request cache {path}: {e2}") from None


def check_cache(path: str | Path) -> None:
    """Before any model loads: the request cache at ``path`` can be opened and written (a damaged
    one is moved aside now, with its warning); otherwise one error line."""
    _open(Path(path)).close()
