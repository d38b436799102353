"""Training data: read records (JSONL, CSV, ``datasets``), tokenise them, pad them into batches.

A tokenised dataset is a plain list of ``{"input_ids": [...], "labels": [...]}`` dicts (extra
numeric fields, e.g. a per-example weight, pass through the collator as tensors). Labels are
``-100`` where no loss is taken: prompt tokens for prompt/answer data, padding everywhere.
Everything is tokenised up front: the datasets these recipes use are small, and it makes the
data order a pure function of (seed, epoch), which is what lets a resumed run skip ahead exactly.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_jsonl
from llmgen.training.losses import IGNORE_INDEX

Features = dict[str, Any]


# --- reading -------------------------------------------------------------------------------------


def load_records(source: str | Path, split: str = "train", required: Sequence[str] = ()) -> list[dict]:
    """Rows of a JSONL/JSON-lines, CSV file, a saved ``datasets`` folder, or a hub dataset id."""
    path = Path(str(source)).expanduser()
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path, required=required)
    if path.suffix == ".csv":
        rows = _read_csv(path)
    elif path.is_dir():
        rows = _read_hf(str(path), split, local=True)
    elif path.suffix or str(source).startswith((".", "/", "~")):
        raise LlmgenError(f"data file not found or unsupported: {source} (use .jsonl, .csv, a folder or hub id)")
    else:
        rows = _read_hf(str(source), split, local=False)
    if not rows:
        raise LlmgenError(f"empty dataset: {source} has no rows")
    for i, row in enumerate(rows):
        missing = [k for k in required if k not in row or row[k] is None]
        if missing:
            raise LlmgenError(f"{source} row {i + 1}: missing field {missing[0]!r}")
    return rows


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise LlmgenError(f"file not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _read_hf(source: str, split: str, local: bool) -> list[dict]:
    import datasets

    try:
        saved = any((Path(source) / f).exists() for f in ("dataset_info.json", "dataset_dict.json"))
        if local and saved:
            ds = datasets.load_from_disk(source)
        else:
            ds = datasets.load_dataset(source)
    except Exception as e:  # datasets raises many types (FileNotFound, ConnectionError, ValueError)
        raise LlmgenError(f"cannot load dataset {source!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise LlmgenError(f"dataset {source!r} has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    return [dict(r) for r in ds]


# --- tokenising ----------------------------------------------------------------------------------


def _ids(tokenizer, text: str, special: bool = True) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_prompt_answer(tokenizer, prompt: str, answer: str, max_length: int,
                         add_special_tokens: bool = True) -> Features | None:
    """Tokenise ``prompt + answer + EOS``; labels cover the answer and EOS only.

    The prompt is tokenised on its own and the prompt+answer string as a whole; tokens shared
    by both (the common prefix) are masked. This stays right when a tokenizer merges across the
    boundary. Returns None when truncation leaves no answer token. ``add_special_tokens=False``
    for a prompt that carries its own BOS text (a model family's template, a chat template).
    """
    prompt_ids = _ids(tokenizer, prompt, add_special_tokens)
    full = _ids(tokenizer, prompt + answer, add_special_tokens) + [tokenizer.eos_token_id]
    n_prompt = 0
    while n_prompt < min(len(prompt_ids), len(full) - 1) and prompt_ids[n_prompt] == full[n_prompt]:
        n_prompt += 1
    full = full[:max_length]
    labels = [IGNORE_INDEX] * min(n_prompt, len(full)) + full[n_prompt:]
    if all(x == IGNORE_INDEX for x in labels):
        return None
    return {"input_ids": full, "labels": labels}


def encode_text(tokenizer, text: str, max_length: int) -> Features | None:
    """Tokenise ``text + EOS`` with the loss on every token."""
    ids = (_ids(tokenizer, text) + [tokenizer.eos_token_id])[:max_length]
    return {"input_ids": ids, "labels": list(ids)} if len(ids) > 1 else None


def prompt_answer_dataset(records: Sequence[Mapping], tokenizer, prompt_field: str = "prompt",
                          answer_field: str = "answer", max_length: int = 512, name: str = "data",
                          add_special_tokens: bool = True) -> list[Features]:
    """Answer-only-loss features from records; clear errors for missing fields or nothing left."""
    out = []
    for i, r in enumerate(records):
        for f in (prompt_field, answer_field):
            if f not in r or r[f] is None:
                raise LlmgenError(f"{name} row {i + 1}: missing field {f!r}")
        feat = encode_prompt_answer(tokenizer, str(r[prompt_field]), str(r[answer_field]), max_length,
                                    add_special_tokens)
        if feat is not None:
            out.append(feat)
    if not out:
        raise LlmgenError(f"empty dataset: {name} has no example with an answer token within max_length={max_length}")
    return out


def text_dataset(records: Sequence[Mapping], tokenizer, text_field: str = "text", max_length: int = 512,
                 name: str = "data") -> list[Features]:
    """Full-loss features from records holding plain text."""
    out = []
    for i, r in enumerate(records):
        if text_field not in r or r[text_field] is None:
            raise LlmgenError(f"{name} row {i + 1}: missing field {text_field!r}")
        feat = encode_text(tokenizer, str(r[text_field]), max_length)
        if feat is not None:
            out.append(feat)
    if not out:
        raise LlmgenError(f"empty dataset: {name} has no non-empty text")
    return out


def build_dataset(source: str, tokenizer, data_format: str = "auto", prompt_field: str = "prompt",
                  answer_field: str = "answer", text_field: str = "text", max_length: int = 512,
                  split: str = "train") -> list[Features]:
    """Read and tokenise one source; ``auto`` picks prompt/answer when both fields exist."""
    records = load_records(source, split=split)
    if data_format == "auto":
        first = records[0]
        if prompt_field in first and answer_field in first:
            data_format = "prompt_answer"
        elif text_field in first:
            data_format = "text"
        else:
            raise LlmgenError(f"{source}: missing field {prompt_field!r}/{answer_field!r} or {text_field!r} "
                              f"(fields: {', '.join(first)})")
    if data_format == "prompt_answer":
        return prompt_answer_dataset(records, tokenizer, prompt_field, answer_field, max_length, name=str(source))
    return text_dataset(records, tokenizer, text_field, max_length, name=str(source))


# --- batching ------------------------------------------------------------------------------------


def pad_collate(features: Sequence[Features], pad_token_id: int) -> dict:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and build ``attention_mask``.

    Extra numeric fields become tensors, so a loss can read per-example values from the batch.
    """
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.as_tensor(f["input_ids"])
        labels[i, :n] = torch.as_tensor(f.get("labels", f["input_ids"]))
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key in features[0]:
        if key not in batch and isinstance(features[0][key], int | float | bool):
            batch[key] = torch.tensor([f[key] for f in features])
    return batch




def check_features(data: Any, name: str = "train_dataset") -> list[Features]:
    """Accept a list of feature dicts (or a ``datasets.Dataset`` of them) and check its shape. A
    ``Sequence`` is kept as it is, so one that builds its rows when read (IdkDPO's answers drawn
    afresh each time, ``llmgen.recipes.npo_unlearning.IdkRows``) keeps doing so."""
    if data is None:
        raise LlmgenError(f"no {name}: pass a dataset or set TrainConfig.data")
    rows = data if isinstance(data, Sequence) else list(data)
    if not rows:
        raise LlmgenError(f"empty dataset: {name} has no rows")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping) or "input_ids" not in r:
            raise LlmgenError(f"{name} row {i + 1}: missing field 'input_ids' (tokenise with "
                              "llmgen.training.data.prompt_answer_dataset or text_dataset)")
    return rows


def epoch_order(n: int, seed: int, epoch: int, stream: int = 0) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch, stream) so resume can skip."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + stream * 104_729)
    return torch.randperm(n, generator=g).tolist()


def batch_indices(n: int, batch_size: int, seed: int, micro: int, world: int, rank: int,
                  stream: int = 0) -> tuple[int, list[int]]:
    """``(epoch, example indices)`` of this rank's micro-batch number ``micro`` in an endless stream.

    Each micro-batch of the global stream holds ``batch_size * world`` examples; rank ``r`` takes its
    slice. An epoch's last, short global batch is padded from the start of the same epoch when
    running on several processes, so every rank sees a full batch and DDP stays in step.
    """
    global_bs = batch_size * world
    per_epoch = -(-n // global_bs)
    epoch, pos = divmod(micro, per_epoch)
    order = epoch_order(n, seed, epoch, stream)
    chunk = order[pos * global_bs:(pos + 1) * global_bs]
    if world > 1 and len(chunk) < global_bs:
        chunk = chunk + (order * global_bs)[: global_bs - len(chunk)]
    per_rank = -(-len(chunk) // world)
    return epoch, chunk[rank * per_rank:(rank + 1) * per_rank]


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return -(-n // (batch_size * world))
