"""A request's result depends on the request (and seed), not on the batch it shares: the HF backend's
greedy completions are the same tokens alone or batched with longer, shorter and prefix-sharing
prompts, at any batch size, and log-likelihoods agree to float32 rounding (padding and the shared-prefix
pass change the order of float sums, ~1e-6 relative; far below any gap that ranks two choices)."""

from __future__ import annotations

import pytest

from llmgen.backends import SamplingConfig, get_backend

SHARED = "Question: what is the capital of France? Answer: Paris.\nQuestion: what is the capital of Italy? Answer:"
PROMPTS = ["Hi", SHARED + " Rome", SHARED + " Milan and", "A much longer prompt than the others, " * 6, SHARED]
PAIRS = [(p, c) for p in PROMPTS for c in (" Rome", " Paris is", "!")]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_hf_results_do_not_depend_on_batch_composition(tiny_model_dir, batch_size):
    backend = get_backend("hf", tiny_model_dir, batch_size=batch_size)
    sampling = SamplingConfig(max_tokens=12)
    alone = [backend.generate([p], sampling)[0][0] for p in PROMPTS]
    together = [c[0] for c in backend.generate(PROMPTS, sampling)]
    reversed_ = [c[0] for c in backend.generate(PROMPTS[::-1], sampling)][::-1]
    for a, b, c in zip(alone, together, reversed_, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids and a.text == b.text == c.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4) and a.logprobs == pytest.approx(c.logprobs, abs=1e-4)
    scored_alone = [backend.loglikelihood([p])[0] for p in PAIRS]
    for order in (PAIRS, PAIRS[::-1]):
        scored = backend.loglikelihood(order)
        if order is not PAIRS:
            scored = scored[::-1]
        for a, b in zip(scored_alone, scored, strict=True):
            assert a.num_tokens == b.num_tokens and a.is_greedy == b.is_greedy
            assert a.logprob == pytest.approx(b.logprob, rel=1e-5, abs=1e-4)
    backend.close()
