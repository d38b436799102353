"""Plain-text corpora chunked into fixed-length token sequences.

Recipes that train on "some text" (hyperfitting: 2000 sequences of 256 tokens) need a source that
works offline on every machine. The default, ``"stdlib"``, is the Python language reference
topics that ship with ``pydoc`` followed by the docstrings of the standard library, read with
``ast`` from the source files (never imported: importing ``this`` or ``antigravity`` has side
effects) in sorted path order, so the same Python version always yields the same text. Other sources: a ``.txt`` file (documents separated by blank lines), a ``.jsonl``
file with a ``text`` field, or a ``datasets`` dataset as ``hf:<name>[:<config>]:<split>``.
"""

from __future__ import annotations

import ast
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmgen.errors import LlmgenError

# Test suites are scaffolding, not prose; pydoc_data is read separately (its topics are one big dict).
_SKIP_DIRS = {"test", "tests", "site-packages", "__pycache__", "pydoc_data"}


def stdlib_texts(min_chars: int = 40) -> Iterator[str]:
    """The language reference topics shipped in ``pydoc_data``, then every stdlib docstring.

    About 560k SmolLM2 tokens, enough for the paper's 2000 x 256-token sequences plus held-out
    prompts. Exact duplicate docstrings are yielded once, and short ones ("Return self.") are
    skipped: they would dominate the n-gram statistics without adding prose.
    """
    from pydoc_data.topics import topics

    yield from (topics[k] for k in sorted(topics))
    seen: set[str] = set()
    for doc in stdlib_docstrings(min_chars):
        if doc not in seen:
            seen.add(doc)
            yield doc


def stdlib_docstrings(min_chars: int = 40) -> Iterator[str]:
    """Docstrings (module, class, function) of the standard library, in sorted file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= min_chars:
                    yield doc


def _text_file_documents(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    for doc in text.split("\n\n"):
        if doc.strip():
            yield doc.strip()


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    from llmgen.io import read_jsonl

    for row in read_jsonl(path, required=[field]):
        if str(row[field]).strip():
            yield str(row[field])


def _hf_documents(spec: str, field: str) -> Iterator[str]:
    import datasets

    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise LlmgenError(f"dataset spec must be hf:<name>[:<config>]:<split>, got {'hf:' + spec!r}")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types (network, missing config, ...)
        raise LlmgenError(f"cannot load dataset {name!r}: {str(e).splitlines()[0]}") from None
    if field not in ds.column_names:
        raise LlmgenError(f"dataset {name!r} has no field {field!r} (fields: {', '.join(ds.column_names)})")
    for text in ds[field]:
        if text and text.strip():
            yield text


def iter_documents(source: str = "stdlib", text_field: str = "text") -> Iterator[str]:
    """Documents of a text source: ``stdlib``, a ``.txt``/``.jsonl`` path, or ``hf:name[:config]:split``."""
    if source == "stdlib":
        return stdlib_texts()
    if source.startswith("hf:"):
        return _hf_documents(source[3:], text_field)
    path = Path(source).expanduser()
    if not path.is_file():
        raise LlmgenError(f"text source not found: {source} (use 'stdlib', a .txt/.jsonl file or hf:<name>:<split>)")
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, text_field)
    return _text_file_documents(path)


@dataclass
class TokenChunks:
    """Fixed-length token sequences split into a training set and a held-out set
    (``total_tokens``: the tokens read, or for ``document_sequences`` the tokens kept)."""

    train: list[list[int]]
    heldout: list[list[int]]
    total_tokens: int


def chunk_documents(documents: Iterator[str] | list[str], tokenizer, seq_len: int, num_train: int,
                    num_heldout: int, seed: int = 0, pool_tokens: int | None = None) -> TokenChunks:
    """Tokenise documents (EOS between them) into ``num_train + num_heldout`` chunks of ``seq_len``.

    Reads only as many documents as needed: the first ``(num_train + num_heldout) * seq_len``
    tokens, or ``pool_tokens`` if larger, in which case the chunks are drawn at random from that
    pool (the paper draws its sequences at random from a large corpus; a small run otherwise sees
    only the start of the source). The chunks are shuffled with ``seed`` before the split so that
    training and held-out sequences come from the same mix of documents. Too little text is an
    error, not a silent shrink: the recipe's numbers would otherwise not mean what the config says.
    """
    if seq_len < 1 or num_train < 1 or num_heldout < 0:
        raise LlmgenError(f"need seq_len >= 1 and num_train >= 1, got seq_len={seq_len}, num_train={num_train}")
    need = (num_train + num_heldout) * seq_len
    wanted = max(need, pool_tokens or 0)
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    n_docs = 0
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + sep)
        n_docs += 1
        if len(ids) >= wanted:
            break
    if n_docs == 0 or not ids:
        raise LlmgenError("empty dataset: the text source has no documents")
    if len(ids) < seq_len:
        raise LlmgenError(f"sequence length {seq_len} is longer than the data ({len(ids)} tokens)")
    if len(ids) < need:
        raise LlmgenError(f"the text source has {len(ids)} tokens: {len(ids) // seq_len} sequences of {seq_len}, "
                          f"but {num_train} training + {num_heldout} held-out were asked for")
    rng = random.Random(seed)
    k = num_train + num_heldout
    if pool_tokens:  # a random subset of the pool, in random order
        picked = rng.sample(range(len(ids) // seq_len), k)
    else:  # the first k chunks, shuffled
        picked = list(range(k))
        rng.shuffle(picked)
    chunks = [ids[i * seq_len : (i + 1) * seq_len] for i in picked]
    return TokenChunks(train=chunks[:num_train], heldout=chunks[num_train:], total_tokens=len(ids))


def document_sequences(documents: Iterator[str] | list[str], tokenizer, seq_len: int, num_train: int,
                       num_heldout: int) -> TokenChunks:
    """The hyperfitting paper's split: one sequence per document, its first ``seq_len`` tokens.

    As in the reference (FreddeFrallan/Hyperfitting ``src/data.py``,
    ``tokenize_hyperfitting_dataset``), each document is tokenised with the tokenizer's special
    tokens and cut at ``seq_len``; documents shorter than that are skipped; the first
    ``num_train`` sequences train and the next ``num_heldout`` are held out. A held-out prompt is
    then the start of a document no training sequence comes from, so it never continues a
    training chunk (``chunk_documents`` cuts one token stream and cannot promise that).
    """
    if seq_len < 1 or num_train < 1 or num_heldout < 0:
        raise LlmgenError(f"need seq_len >= 1 and num_train >= 1, got seq_len={seq_len}, num_train={num_train}")
    need = num_train + num_heldout
    kept: list[list[int]] = []
    n_docs = tokens = 0
    for doc in documents:
        n_docs += 1
        ids = tokenizer(doc, truncation=True, max_length=seq_len)["input_ids"]
        if len(ids) == seq_len:
            kept.append(list(ids))
            tokens += seq_len
            if len(kept) == need:
                break
    if n_docs == 0:
        raise LlmgenError("empty dataset: the text source has no documents")
    if len(kept) < need:
        raise LlmgenError(f"the text source has {len(kept)} documents of at least {seq_len} tokens, but {num_train} "
                          f"training + {num_heldout} held-out were asked for (split 'document'); use fewer or "
                          f"shorter sequences, another source, or split 'stream'")
    return TokenChunks(train=kept[:num_train], heldout=kept[num_train:], total_tokens=tokens)
