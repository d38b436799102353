"""Open-ended generation metrics: diversity, repetition, confidence and copying.

Each metric is a small pure function over token lists (or texts, for self-BLEU), so it can be
checked by hand and reused outside the hyperfitting recipe. Conventions follow Carlsson et al.
(2025): type-token ratio over the last W = 96 generated tokens, entropies in nats, and copying
measured as the share of generated 5-grams that occur in the training data.

Degenerate inputs that have no n-grams (a continuation shorter than n) give 0.0 for distinct-n,
repetition and overlap: "nothing repeated / nothing copied" is the honest answer there. Inputs
for which a metric is undefined (no tokens at all, fewer than two texts for self-BLEU) raise
``LlmgenError``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from llmgen.errors import LlmgenError


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple]:
    """All contiguous n-grams of ``tokens``, in order (empty when ``len(tokens) < n``)."""
    if n < 1:
        raise LlmgenError(f"n-gram order must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_set(sequences: Iterable[Sequence[Hashable]], n: int = 5) -> set[tuple]:
    """Every n-gram occurring in any of ``sequences`` (e.g. the training set's 5-grams)."""
    out: set[tuple] = set()
    for seq in sequences:
        out.update(ngrams(seq, n))
    return out


def type_token_ratio(tokens: Sequence[Hashable], window: int | None = 96) -> float:
    """Distinct tokens / tokens over the last ``window`` tokens (all tokens if ``None``).

    The paper measures the *end* of a long continuation because that is where greedy decoding
    falls into loops; a plain TTR over the whole text would dilute the collapse.
    """
    if window is not None and window < 1:
        raise LlmgenError(f"TTR window must be >= 1, got {window}")
    tail = list(tokens) if window is None else list(tokens)[-window:]
    if not tail:
        raise LlmgenError("type-token ratio of an empty token list is undefined")
    return len(set(tail)) / len(tail)


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int = 2) -> float:
    """Corpus distinct-n (Li et al. 2016): unique n-grams / total n-grams over all sequences."""
    grams = [g for seq in sequences for g in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens: Sequence[Hashable], n: int = 4) -> float:
    """Share of n-gram occurrences that repeat an earlier n-gram: 1 - unique / total."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def longest_repeated_loop(tokens: Sequence[Hashable]) -> int:
    """Length in tokens of the longest span made of one unit repeated back to back (>= 2 times).

    A span is a loop of period p when every token equals the token p positions earlier and the
    unit occurs at least twice in full; ``[1, 2, 3, 1, 2, 3, 1, 2]`` is one loop of 8 tokens
    (period 3). Returns 0 when there is no loop. This is the "stuck in a cycle" failure of greedy
    decoding that repetition rate only sees as an average.
    """
    toks = list(tokens)
    best = 0
    for p in range(1, len(toks) // 2 + 1):
        run = 0
        for j in range(p, len(toks)):
            run = run + 1 if toks[j] == toks[j - p] else 0
            if run >= p:
                best = max(best, run + p)
    return best


def self_bleu(texts: Sequence[str], tokenize: str = "13a") -> float:
    """Mean sentence BLEU (0..1) of each text against all the others as references.

    High self-BLEU means the continuations resemble each other (low diversity across prompts).
    Uses sacrebleu's ``sentence_bleu`` (exponential smoothing, effective order), so short texts
    do not collapse to zero.
    """
    from sacrebleu.metrics import BLEU

    if len(texts) < 2:
        raise LlmgenError(f"self-BLEU needs at least 2 texts, got {len(texts)}")
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [bleu.sentence_score(t, [o for j, o in enumerate(texts) if j != i]).score
              for i, t in enumerate(texts)]
    return float(np.mean(scores)) / 100.0


def perplexity(token_logprobs: Iterable[float]) -> float:
    """exp of the mean negative log-likelihood per token (natural log)."""
    lps = np.asarray(list(token_logprobs), dtype=np.float64)
    if lps.size == 0:
        raise LlmgenError("perplexity of zero tokens is undefined")
    if np.any(lps > 1e-6):
        raise LlmgenError("token logprobs must be <= 0 (natural-log probabilities)")
    return float(math.exp(-lps.mean()))


def token_entropies(logits) -> np.ndarray:
    """Entropy (nats) of the softmax of each row of ``logits`` [steps, vocab].

    Logits or log-probabilities both work (log-softmax is applied first); ``-inf`` entries are
    tokens with zero probability and contribute nothing.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise LlmgenError(f"expected logits of shape [steps, vocab], got {x.shape}")
    m = x.max(axis=1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    return -(p * np.where(p > 0, logp, 0.0)).sum(axis=1)


def ngram_overlap(tokens: Sequence[Hashable], reference_ngrams: set[tuple], n: int = 5) -> float:
    """Share of the n-grams of ``tokens`` found in ``reference_ngrams`` (e.g. the training set).

    Measures copying: a hyperfitted model that merely recited its training data would score near 1.
    """
    grams = ngrams(tokens, n)
    return sum(g in reference_ngrams for g in grams) / len(grams) if grams else 0.0
