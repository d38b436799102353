"""Hyperfitting protocol: text chunks, bad input, held-out scores (its generation options, the citation
blocker included, are the backend's: tests/llmgen/backends/test_generation_options.py)."""

from __future__ import annotations

import pytest
import torch

from llmgen.errors import LlmgenError
from llmgen.models import byte_tokenizer, tiny_model
from llmgen.recipes.hyperfitting import HyperfittingConfig, heldout_point
from llmgen.recipes.hyperfitting.text_sources import (
    chunk_documents,
    document_sequences,
    iter_documents,
    stdlib_texts,
)

DOCS = [f"Document number {i} says something about topic {i % 7}." for i in range(40)]


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model(seed=0)
    model.eval()
    return model, tok


def test_chunks_are_fixed_length_split_and_seeded():
    tok = byte_tokenizer()
    a = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=1)
    b = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=1)
    c = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=2)
    assert len(a.train) == 10 and len(a.heldout) == 4
    assert all(len(s) == 32 for s in a.train + a.heldout)
    assert a.train == b.train and a.heldout == b.heldout
    assert a.train != c.train
    assert not {tuple(s) for s in a.train} & {tuple(s) for s in a.heldout}
    # drawn at random from a larger pool: chunks from beyond the first 14, still deterministic
    ids = byte_tokenizer()("".join(d + "</s>" for d in DOCS), add_special_tokens=False)["input_ids"]
    first = {tuple(ids[i * 32:(i + 1) * 32]) for i in range(14)}
    p1 = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=1, pool_tokens=10_000)
    p2 = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=1, pool_tokens=10_000)
    assert p1.train == p2.train and all(len(s) == 32 for s in p1.train)
    assert {tuple(s) for s in p1.train + p1.heldout} - first


def test_document_split_takes_each_document_start_as_the_reference():
    tok = byte_tokenizer()
    docs = ["short", *DOCS]  # "short" has fewer than 32 tokens: skipped, as in the reference
    got = document_sequences(iter(docs), tok, seq_len=32, num_train=10, num_heldout=4)
    expected = [tok(d)["input_ids"][:32] for d in DOCS[:14]]  # special tokens included, cut at 32
    assert got.train == expected[:10] and got.heldout == expected[10:]
    # so each held-out prompt starts a document of its own: none continues a training sequence.
    # The stream split, by contrast, cuts one token stream: a held-out chunk can be the next 32
    # tokens after a training chunk.
    stream = chunk_documents(DOCS, tok, seq_len=32, num_train=10, num_heldout=4, seed=1)
    ids = tok("".join(d + "</s>" for d in DOCS), add_special_tokens=False)["input_ids"]
    cut = [ids[i * 32:(i + 1) * 32] for i in range(14)]
    follows = [cut.index(h) - 1 for h in stream.heldout]
    assert any(cut[i] in stream.train for i in follows if i >= 0)
    with pytest.raises(LlmgenError, match="has 40 documents of at least 32 tokens"):
        document_sequences(DOCS, tok, seq_len=32, num_train=40, num_heldout=4)
    with pytest.raises(LlmgenError, match="empty dataset"):
        document_sequences([], tok, seq_len=8, num_train=1, num_heldout=0)
    with pytest.raises(LlmgenError, match="split 'stream'"):
        HyperfittingConfig(pool_tokens=1000).validate()
    with pytest.raises(LlmgenError, match="unknown split"):
        HyperfittingConfig(split="random").validate()


def test_heldout_entropy_and_perplexity_match_the_reference_formula(tiny):
    """Reference (src/validation.py): softmax of the logits at every position of the held-out
    text, -Σ p log(p + 1e-9), averaged; perplexity = exp of the mean next-token NLL."""
    import math

    model, tok = tiny
    seqs = [tok(d)["input_ids"][:24] for d in DOCS[:5]]
    got = heldout_point(model, seqs, batch_size=2)
    ids = torch.tensor(seqs)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double()
    probs = torch.softmax(logits, -1)
    entropy = -(probs * torch.log(probs + 1e-9)).sum(-1).mean().item()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    assert got["heldout_entropy"] == pytest.approx(entropy, abs=1e-5)
    assert got["heldout_perplexity"] == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_sequence_longer_than_data_is_an_error():
    with pytest.raises(LlmgenError, match="longer than the data"):
        chunk_documents(["tiny text"], byte_tokenizer(), seq_len=256, num_train=1, num_heldout=0)


def test_too_few_sequences_is_an_error():
    with pytest.raises(LlmgenError, match="training \\+ 4 held-out"):
        chunk_documents(DOCS, byte_tokenizer(), seq_len=32, num_train=1000, num_heldout=4)


def test_empty_dataset_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(LlmgenError, match="empty dataset"):
        chunk_documents(iter_documents(str(empty)), byte_tokenizer(), seq_len=8, num_train=1, num_heldout=0)
    with pytest.raises(LlmgenError, match="empty dataset"):
        chunk_documents([], byte_tokenizer(), seq_len=8, num_train=1, num_heldout=0)
    with pytest.raises(LlmgenError, match="not found"):
        iter_documents(str(tmp_path / "missing.txt"))


def test_stdlib_source_is_deterministic():
    first = [d for _, d in zip(range(30), stdlib_texts(), strict=False)]
    again = [d for _, d in zip(range(30), stdlib_texts(), strict=False)]
    assert first == again and all(d.strip() for d in first)


def test_config_rejects_bad_values():
    with pytest.raises(LlmgenError, match="prompt_len"):
        HyperfittingConfig(seq_len=32, prompt_len=32).validate()
    from llmgen.config import load_config

    with pytest.raises(LlmgenError, match="top_p"):
        load_config(HyperfittingConfig, None, {"eval.top_p": 0}).validate()
    with pytest.raises(LlmgenError, match="epochs"):
        load_config(HyperfittingConfig, None, {"train.epochs": 0}).validate()
    with pytest.raises(LlmgenError, match="eval.backend: set by the HyperfittingConfig recipe"):
        load_config(HyperfittingConfig, None, {"eval.backend": "vllm"}).validate()
    HyperfittingConfig().validate()  # the paper's defaults are valid


def _reference_window_ttr(context_and_generation: list[int], context_len: int, window: int) -> float:
    """validation.py ``_generation_validation``: ``gen_seq[context_len:][-ttr_window_size:]``, distinct / all."""
    seq = context_and_generation[context_len:][-window:]
    return len(set(seq)) / len(seq) if seq else 0


def test_ttr_window_is_the_references_with_eos_padding():
    from llmgen.recipes.hyperfitting import reference_ttr, ttr_window_tokens

    eos, prompt = 0, [9, 9, 9]
    # what model.generate returns (pad_token_id = eos): the continuation up to its EOS, then EOS;
    # llmgen generates past EOS (ignore_eos), greedy-identical up to it
    generated_past_eos = [5, 6, 7, eos, 8, 8, 8, 8]
    as_reference = [5, 6, 7, eos, eos, eos, eos, eos]
    assert ttr_window_tokens(generated_past_eos, eos) == as_reference
    assert ttr_window_tokens(generated_past_eos, eos, "ignore") == generated_past_eos
    cfg = HyperfittingConfig(ttr_window=6)
    assert reference_ttr(generated_past_eos, eos, cfg) == _reference_window_ttr(prompt + as_reference, 3, 6) == 2 / 6  # {7, EOS} of [7, EOS x 5]
    cfg.ttr_eos = "ignore"  # the option: the tokens generated past EOS
    assert reference_ttr(generated_past_eos, eos, cfg) == 3 / 6  # {7, 0, 8} of [7, 0, 8, 8, 8, 8]
    assert reference_ttr([1, 2, 3, 4], eos, HyperfittingConfig(ttr_window=6)) == 1.0  # no EOS: unchanged


def test_defaults_follow_the_reference_code():
    # start_hyperfitting.py: AdamW(model.parameters(), lr) (PyTorch's default weight decay), no clipping
    # in training.py; validation.py generates to max_length = seq_len, so seq_len - 32 new tokens
    cfg = HyperfittingConfig()
    default_decay = torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults["weight_decay"]
    assert cfg.train.weight_decay == default_decay == 0.01 and cfg.train.max_grad_norm is None
    assert cfg.eval.max_new_tokens == cfg.seq_len - cfg.prompt_len == 224
    assert cfg.ttr_window == 96 and cfg.ttr_eos == "pad"
    with pytest.raises(LlmgenError, match="ttr_eos must be one of pad, ignore"):
        HyperfittingConfig(ttr_eos="drop").validate()
