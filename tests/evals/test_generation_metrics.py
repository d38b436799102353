"""Generation metrics against values computed by hand (and self-BLEU against nltk)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.generation import (
    distinct_n,
    longest_repeated_loop,
    ngram_overlap,
    ngram_set,
    ngrams,
    perplexity,
    repetition_rate,
    self_bleu,
    token_entropies,
    type_token_ratio,
)


def test_ngrams_and_set():
    assert ngrams([1, 2, 3, 4], 2) == [(1, 2), (2, 3), (3, 4)]
    assert ngrams([1, 2], 3) == []
    assert ngram_set([[1, 2, 3], [2, 3, 4]], 2) == {(1, 2), (2, 3), (3, 4)}
    with pytest.raises(LlmgenError):
        ngrams([1, 2], 0)


def test_type_token_ratio_uses_last_window():
    toks = [1, 2, 3, 4, 5, 5, 5, 5]
    assert type_token_ratio(toks, window=4) == 1 / 4  # last four are all 5
    assert type_token_ratio(toks, window=6) == 3 / 6  # 3, 4, 5
    assert type_token_ratio(toks, window=None) == 5 / 8
    assert type_token_ratio(toks, window=100) == 5 / 8  # shorter than the window: all tokens
    assert type_token_ratio(list(range(200))) == 1.0  # default W = 96
    with pytest.raises(LlmgenError, match="empty"):
        type_token_ratio([])


def test_distinct_n_is_corpus_level():
    seqs = [[1, 2, 1, 2], [1, 2, 3]]
    # bigrams: (1,2),(2,1),(1,2) | (1,2),(2,3) -> 5 total, 3 unique
    assert distinct_n(seqs, 2) == pytest.approx(3 / 5)
    # unigrams: 7 total, {1,2,3} unique
    assert distinct_n(seqs, 1) == pytest.approx(3 / 7)
    assert distinct_n([[1]], 2) == 0.0


def test_repetition_rate():
    # 2-grams of [1,2,1,2,1]: (1,2),(2,1),(1,2),(2,1) -> 4 total, 2 unique -> 0.5 repeated
    assert repetition_rate([1, 2, 1, 2, 1], n=2) == pytest.approx(0.5)
    assert repetition_rate([1, 2, 3, 4, 5], n=2) == 0.0
    assert repetition_rate([7] * 10, n=4) == pytest.approx(1 - 1 / 7)
    assert repetition_rate([1, 2], n=4) == 0.0


@pytest.mark.parametrize("tokens, expected", [
    ([1, 2, 3, 1, 2, 3, 1, 2], 8),     # period 3, whole list
    ([5, 1, 1, 1], 3),                 # period 1 run of three
    ([1, 2, 1, 3], 0),                 # "1 2 1" is not a full second unit
    ([9, 1, 2, 1, 2, 8, 8], 4),        # "1 2 1 2" beats "8 8"
    ([], 0),
    (list(range(10)), 0),
])
def test_longest_repeated_loop(tokens, expected):
    assert longest_repeated_loop(tokens) == expected


def test_self_bleu_hand_computed():
    # "a b c d" vs "a b c e": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 -> exp smoothing 1/(2*1);
    # equal lengths so BP = 1, and the pair is symmetric.
    expected = (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected)
    assert self_bleu(["same words here now", "same words here now", "same words here now"]) == pytest.approx(1.0)


def test_self_bleu_matches_nltk():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    texts = ["the cat sat on the mat today", "the dog sat on the log today",
             "a cat was on a mat", "the cat sat on a log"]
    # sacrebleu's "exp" smoothing is NIST geometric smoothing = nltk method3; plain words tokenise alike.
    ref = np.mean([sentence_bleu([o.split() for j, o in enumerate(texts) if j != i], t.split(),
                                 smoothing_function=SmoothingFunction().method3) for i, t in enumerate(texts)])
    assert self_bleu(texts) == pytest.approx(ref, abs=1e-9)
    with pytest.raises(LlmgenError, match="at least 2"):
        self_bleu(["only one"])


def test_perplexity():
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert perplexity([math.log(0.5), math.log(0.125)]) == pytest.approx(4.0)  # exp(mean(ln2, ln8)) = 4
    with pytest.raises(LlmgenError):
        perplexity([])
    with pytest.raises(LlmgenError, match="<= 0"):
        perplexity([0.5])


def test_entropy_in_nats():
    uniform4 = np.zeros(4)
    assert token_entropies(uniform4)[0] == pytest.approx(math.log(4))
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2; logprobs in, -inf = impossible token
    logp = np.array([[math.log(0.5), math.log(0.25), math.log(0.25), -np.inf]])
    assert token_entropies(logp)[0] == pytest.approx(1.5 * math.log(2))
    peaked = np.array([[1000.0, 0.0, 0.0]])
    assert token_entropies(peaked)[0] == pytest.approx(0.0, abs=1e-12)


def test_ngram_overlap():
    train = ngram_set([[1, 2, 3, 4, 5, 6]], 5)  # {(1..5), (2..6)}
    assert ngram_overlap([1, 2, 3, 4, 5, 6, 7], train, 5) == pytest.approx(2 / 3)
    assert ngram_overlap([9, 9, 9, 9, 9], train, 5) == 0.0
    assert ngram_overlap([1, 2], train, 5) == 0.0
