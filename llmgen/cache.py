"""A SQLite cache of generations and scores, so an interrupted run resumes without recomputing.

The store only: ``llmgen.backends.cached.CachedBackend`` builds the keys (model fingerprint,
adapter, backend, dtype, context length, request kind, the request and its sampling settings, seed
included) and commits after every backend batch, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        self.hits = 0
        self.misses = 0

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
