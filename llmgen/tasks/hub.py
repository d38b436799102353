"""Rows of an evaluation split from the Hugging Face hub or from local files, through ``datasets``.

One function, ``load_split``, serves every task that reads data: native YAML tasks (``data:`` or
``dataset:``) and the catalogue of the papers' datasets. Sources, in the order they are tried:

- a local file (``.json``/``.jsonl``/``.csv``/``.parquet``/``.arrow``) or a ``save_to_disk`` folder;
- a local copy of a hub dataset under ``--data-dir`` / ``$LLMGEN_DATA_DIR``: ``<dir>/<hub path>/``
  holding either a ``save_to_disk`` folder or the hub repository's files (``<config>/<split>-*.parquet``,
  ``<split>.jsonl``, ...), i.e. what ``huggingface-cli download --repo-type dataset`` leaves;
- the hub itself, through the HF datasets cache; with ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``
  only the cache is read, and a dataset that is not in it is one clear error line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_jsonl

DATA_DIR_ENV = "LLMGEN_DATA_DIR"
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def data_dir() -> Path | None:
    """The folder holding local copies of hub datasets (``--data-dir`` sets ``$LLMGEN_DATA_DIR``)."""
    d = os.environ.get(DATA_DIR_ENV)
    return Path(d) if d else None


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _rows(ds) -> list[dict[str, Any]]:
    return [dict(r) for r in ds]


def _pick_split(dsd, split: str, where: str):
    """A split of a ``DatasetDict`` (or the ``Dataset`` itself), with the known splits on a miss."""
    from datasets import DatasetDict

    if not isinstance(dsd, DatasetDict):
        return dsd
    if split not in dsd:
        raise LlmgenError(f"{where} has no split {split!r} (splits: {', '.join(dsd)})")
    return dsd[split]


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_files(files: list[Path]) -> list[dict[str, Any]]:
    """Rows of local data files of one kind (the kind is the file extension)."""
    import datasets

    kinds = {FILE_BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds or len(kinds) != 1:
        raise LlmgenError(f"data files must all be one of {', '.join(FILE_BUILDERS)}: {', '.join(map(str, files))}")
    for f in files:
        if not f.is_file():
            raise LlmgenError(f"data file not found: {f}")
    try:
        ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")
    except Exception as e:  # pyarrow/json errors: report the file, not a traceback
        raise LlmgenError(f"cannot read {', '.join(map(str, files))}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return _rows(ds)


def load_local(path: Path, split: str = "train") -> list[dict[str, Any]]:
    """A local file or a ``save_to_disk`` folder (``split`` picks from a saved ``DatasetDict``)."""
    import datasets

    if path.is_dir():
        if not _is_saved_dataset(path):
            raise LlmgenError(f"{path} is a folder but not a `save_to_disk` dataset (no dataset_dict.json or state.json)")
        return _rows(_pick_split(datasets.load_from_disk(str(path)), split, str(path)))
    if path.suffix.lower() == ".jsonl":  # llmgen's own JSONL reader: line-numbered errors
        return read_jsonl(path)
    if not path.exists():
        raise LlmgenError(f"data file not found: {path}")
    return load_files([path])


def _data_files(folder: Path, prefix: str = "") -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.glob(f"{prefix}*") if f.is_file() and f.suffix.lower() in FILE_BUILDERS)


def _local_copy(root: Path, name: str | None, split: str) -> list[dict[str, Any]] | None:
    """Rows of ``split`` from a local copy of a hub dataset repository, or None if none is there.

    The hub's own file conventions: ``[<config>/]<split>*.<ext>`` (also under ``data/``), a file per
    config named ``<config>.<ext>`` (TOFU), or files with no split in their names, which are "train".
    """
    if not root.is_dir():
        return None
    if _is_saved_dataset(root):
        return load_local(root, split)
    if name and _is_saved_dataset(root / name):
        return load_local(root / name, split)
    folders = ([root / name, root / "data" / name] if name else []) + [root, root / "data"]
    for folder in folders:
        files = _data_files(folder, split)
        if files:
            return load_files(files)
    if name and _data_files(root, f"{name}."):
        return load_files(_data_files(root, f"{name}."))
    if split == "train":
        for folder in folders[:1] if name else [root / "data", root]:
            files = [f for f in _data_files(folder) if not f.name.startswith(("test", "validation", "dev"))]
            if files:
                return load_files(files)
    raise LlmgenError(f"local copy {root} has no {split!r} split for config {name!r} "
                      f"(expected {split}*.parquet/.jsonl/..., {name}.json, or a save_to_disk folder)")


def load_hub(path: str, name: str | None = None, split: str = "test", revision: str | None = None) -> list[dict[str, Any]]:
    """A split of a hub dataset: a local copy under the data dir, else the hub through the HF cache."""
    import datasets

    local = data_dir()
    if local is not None:
        rows = _local_copy(local / path, name, split)
        if rows is not None:
            return rows
    what = f"hub dataset {path!r}" + (f" (config {name!r})" if name else "") + f" split {split!r}"
    try:
        ds = datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if offline():
            raise LlmgenError(f"{what} is not in the HF cache and offline mode is on (HF_HUB_OFFLINE=1): "
                              f"download it where the hub is reachable, or give --data-dir with a local copy") from None
        raise LlmgenError(f"cannot load {what}: {msg}") from None
    return _rows(ds)


def load_split(spec: dict[str, Any] | str, base: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows named by a task's data spec: a path (relative to ``base``) or ``{path, name, split, revision}``.

    A ``path`` that exists locally (relative to the task file) is read as local data; anything else
    is a hub id. ``split`` overrides the spec's split (the few-shot split of the same dataset).
    """
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict) or "path" not in spec:
        raise LlmgenError(f"a dataset must be a path or a mapping with 'path', got {spec!r}")
    unknown = sorted(set(spec) - {"path", "name", "split", "revision", "data_files"})
    if unknown:
        raise LlmgenError(f"dataset: unknown key {unknown[0]!r} (known: path, name, split, revision, data_files)")
    split = split or spec.get("split") or "train"
    if spec.get("data_files"):
        files = spec["data_files"]
        files = files.get(split) if isinstance(files, dict) else files
        if files is None:
            raise LlmgenError(f"dataset: data_files has no split {split!r}")
        return load_files([base / f for f in ([files] if isinstance(files, str) else files)])
    local = base / str(spec["path"])
    if local.exists() or str(spec["path"]).startswith((".", "/")) or Path(str(spec["path"])).suffix.lower() in FILE_BUILDERS:
        return load_local(local, split)
    return load_hub(str(spec["path"]), spec.get("name"), split, spec.get("revision"))
