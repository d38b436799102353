"""Generation options of the backend interface: ``ignore_eos``, ``return_entropy``, ``block_ngrams``
(``NgramBlock``), ``TokenPrompt`` prompts, and the lazy fingerprint of in-memory models.

Each option is checked against a reference written here: HF ``model.generate``, a plain forward pass
over prompt + continuation with ``torch.softmax``, the n-grams of the output, the nucleus recomputed
from the forward pass.
"""

from __future__ import annotations

import pytest
import torch

from llmgen.backends.base import NgramBlock, SamplingConfig, TokenPrompt
from llmgen.backends.cached import CachedBackend
from llmgen.backends.hf import HFBackend
from llmgen.cache import RequestCache
from llmgen.errors import LlmgenError
from llmgen.evals.generation import ngram_set, ngrams
from llmgen.models import byte_tokenizer, tiny_model

FIXED = dict(ignore_eos=True, return_entropy=True)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model(seed=0)
    model.eval()
    return model, tok


def _prompts(n=4, length=8):
    tok = byte_tokenizer()
    return [tok(f"prompt {i}: ", add_special_tokens=False)["input_ids"][:length] for i in range(n)]


def _backend(model, tok, batch_size=8, cls=HFBackend):
    return cls("in-memory:test", model_obj=model, tokenizer_obj=tok, batch_size=batch_size)


def _run(backend, prompts, **sampling):
    return [c[0] for c in backend.generate([TokenPrompt(p) for p in prompts], SamplingConfig(**sampling))]


def _forward(model, prompt, completion):
    """Reference: one forward pass over prompt + continuation; per generated step, the entropy of
    torch.softmax of the logits and the logprob of the generated token."""
    ids = torch.tensor([list(prompt) + completion.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].double()
    p = torch.softmax(logits, -1)
    entropy = -(p * torch.log(p)).sum(-1)
    logprob = torch.log(p).gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0]
    return entropy.tolist(), logprob.tolist(), p


def test_greedy_fixed_length_matches_hf_generate_in_any_batch(tiny):
    model, tok = tiny
    prompts = _prompts(5)
    a = _run(_backend(model, tok, 2), prompts, max_tokens=20, **FIXED)
    b = _run(_backend(model, tok, 8), prompts, max_tokens=20, **FIXED)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    ref = model.generate(torch.tensor(prompts), max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    assert ref[:, 8:].tolist() == [c.token_ids for c in a]
    # greedy is prefix-consistent: a shorter request gives the head of a longer one
    short = _run(_backend(model, tok), prompts[:2], max_tokens=5, **FIXED)
    assert [c.token_ids for c in short] == [c.token_ids[:5] for c in a[:2]]
    assert short[0].entropies == pytest.approx(a[0].entropies[:5], abs=1e-5)


@pytest.mark.parametrize("sampling", [dict(), dict(temperature=1.0, top_p=0.8, seed=3)], ids=["greedy", "top_p"])
def test_entropies_and_logprobs_are_a_forward_pass(tiny, sampling):
    model, tok = tiny
    prompts = _prompts(3)
    for prompt, c in zip(prompts, _run(_backend(model, tok), prompts, max_tokens=10, **FIXED, **sampling), strict=True):
        entropy, logprob, _ = _forward(model, prompt, c)
        assert len(c.entropies) == len(c.token_ids) == 10
        assert c.entropies == pytest.approx(entropy, abs=1e-5)
        assert c.logprobs == pytest.approx(logprob, abs=1e-4)
    plain = _run(_backend(model, tok), prompts, max_tokens=4, **sampling)
    assert all(c.entropies is None for c in plain)  # only when asked for


def test_top_p_samples_are_seeded_and_inside_the_nucleus(tiny):
    model, tok = tiny
    prompts = _prompts(4)
    backend = _backend(model, tok)
    a = _run(backend, prompts, temperature=1.0, top_p=0.5, max_tokens=12, seed=3, **FIXED)
    assert [c.token_ids for c in a] == [c.token_ids for c in _run(backend, prompts, temperature=1.0, top_p=0.5,
                                                                   max_tokens=12, seed=3, **FIXED)]
    assert [c.token_ids for c in a] != [c.token_ids for c in _run(backend, prompts, temperature=1.0, top_p=0.5,
                                                                   max_tokens=12, seed=4, **FIXED)]
    for prompt, c in zip(prompts, a, strict=True):
        p = _forward(model, prompt, c)[2]
        for step, token in enumerate(c.token_ids):
            sorted_p = p[step].sort(descending=True).values
            smallest_kept = sorted_p[int((sorted_p.cumsum(0) < 0.5).sum())]  # the nucleus reaches 0.5 here
            assert p[step, token] >= smallest_kept - 1e-9


def test_ignore_eos_gives_exactly_max_tokens(tiny):
    """Sampling at temperature 1 from the near-uniform random model draws EOS now and then."""
    model, tok = tiny
    prompts = _prompts(8)
    settings = dict(temperature=1.0, max_tokens=96, seed=1)
    stopping = _run(_backend(model, tok), prompts, **settings)
    assert any(c.finish_reason == "stop" and len(c.token_ids) < 96 and c.token_ids[-1] == tok.eos_token_id
               for c in stopping)
    fixed = _run(_backend(model, tok), prompts, **settings, ignore_eos=True)
    assert all(len(c.token_ids) == 96 and c.finish_reason == "length" for c in fixed)
    assert any(tok.eos_token_id in c.token_ids[:-1] for c in fixed)


def test_blocked_ngrams_never_appear(tiny):
    model, tok = tiny
    prompts = _prompts(6)
    # "Training data" = what greedy decoding produces, so unblocked greedy copies every 5-gram of it.
    plain = _run(_backend(model, tok), prompts, max_tokens=24, **FIXED)
    train = [p + c.token_ids for p, c in zip(prompts, plain, strict=True)]
    block = NgramBlock(train, 5)
    blocked = _run(_backend(model, tok), prompts, max_tokens=24, **FIXED, block_ngrams=block)
    grams = ngram_set(train, 5)
    for p, c in zip(prompts, blocked, strict=True):
        new = ngrams((p + c.token_ids)[len(p) - 4:], 5)  # every 5-gram that ends on a generated token
        assert new and not set(new) & grams
    assert [c.token_ids for c in blocked] != [c.token_ids for c in plain]
    # the raw model's numbers, not the blocked scores', and the same fixed length
    entropy, logprob, _ = _forward(model, prompts[0], blocked[0])
    assert blocked[0].entropies == pytest.approx(entropy, abs=1e-5)
    assert blocked[0].logprobs == pytest.approx(logprob, abs=1e-4)
    assert block.blocked(train[0][:4]) == {train[0][4]} and block.blocked(train[0][:3]) == set()
    with pytest.raises(LlmgenError, match="n >= 2"):
        NgramBlock(train, n=1)


def test_token_prompts_are_not_re_tokenised(tiny):
    """A prompt cut from tokenised text can end inside a character: decoding and encoding again
    changes its ids (byte tokenizer: half of "é" decodes to U+FFFD, three bytes)."""
    model, tok = tiny
    ids = tok("café au lait", add_special_tokens=False)["input_ids"][:4]
    backend = _backend(model, tok)
    assert backend.prepare_generation([TokenPrompt(ids)], SamplingConfig())[0].token_ids == ids
    assert backend.prepare_generation([tok.decode(ids)], SamplingConfig())[0].token_ids != ids
    with pytest.raises(LlmgenError, match="at least one token"):
        TokenPrompt(())


def test_cache_keys_cover_the_options_and_entropies_round_trip(tiny, tmp_path):
    model, tok = tiny
    prompts = [TokenPrompt(p) for p in _prompts(2)]
    train = [p.ids + (1, 2, 3) for p in prompts]
    cache = RequestCache(tmp_path / "c.sqlite")
    cached = CachedBackend(_backend(model, tok), cache)
    base = SamplingConfig(max_tokens=6, **FIXED)
    first = cached.generate(prompts, base)
    again = CachedBackend(_backend(model, tok), cache).generate(prompts, base)
    assert cache.hits == 2 and again == first and again[0][0].entropies
    for other in (SamplingConfig(max_tokens=6, ignore_eos=True), SamplingConfig(max_tokens=6, return_entropy=True),
                  SamplingConfig(max_tokens=6, **FIXED, block_ngrams=NgramBlock(train, 4))):
        misses = cache.misses
        cached.generate(prompts, other)
        assert cache.misses == misses + 2
    # a block is keyed by its n-grams' content: the same n-grams in another order hit
    hits = cache.hits
    cached.generate(prompts, SamplingConfig(max_tokens=6, **FIXED, block_ngrams=NgramBlock(train[::-1], 4)))
    assert cache.hits == hits + 2
    assert "ignore_eos" not in SamplingConfig().to_dict()  # requests without the options keep their keys
    # a token prompt and the text it decodes to are different requests
    misses = cache.misses
    cached.generate([tok.decode(p.ids) for p in prompts], base)
    assert cache.misses == misses + 2
    cache.close()


class CountingHF(HFBackend):
    """An HF backend that counts how often it hashes its model."""

    hashes = 0

    def _compute_fingerprint(self) -> str:
        self.hashes += 1
        return super()._compute_fingerprint()


def test_in_memory_model_is_hashed_only_for_a_persistent_cache(tiny, tmp_path):
    model, tok = tiny
    prompts = [TokenPrompt(p) for p in _prompts(2)]
    backend = _backend(model, tok, cls=CountingHF)
    backend.generate(prompts, SamplingConfig(max_tokens=3))
    CachedBackend(backend, RequestCache(None)).generate(prompts, SamplingConfig(max_tokens=3))
    assert backend.describe()["fingerprint"] is None
    assert backend.hashes == 0 and backend._fingerprint is None
    cache = RequestCache(tmp_path / "c.sqlite")
    CachedBackend(backend, cache).generate(prompts, SamplingConfig(max_tokens=3))
    CachedBackend(backend, cache).loglikelihood([("ab", "cd")])
    assert backend.hashes == 1 and backend.describe()["fingerprint"].startswith("mem-")
    cache.close()


def test_backends_without_an_option_refuse_it_in_one_line():
    from llmgen.backends.openai import OpenAIBackend
    from llmgen.backends.vllm_engine import VLLMBackend

    for cls in (VLLMBackend, OpenAIBackend):
        backend = cls.__new__(cls)  # check_options needs no engine or server
        backend.check_options([SamplingConfig(ignore_eos=True)])
        with pytest.raises(LlmgenError, match=f"the {cls.name} backend cannot generate with block_ngrams, return_entropy"):
            backend.check_options([SamplingConfig(return_entropy=True), SamplingConfig(block_ngrams=NgramBlock([[1, 2]], 2))])


@pytest.mark.vllm
def test_vllm_ignores_eos_when_asked(vllm_tiny):
    tok = vllm_tiny.tokenizer
    prompts = [TokenPrompt(p) for p in _prompts(8)]
    settings = dict(temperature=1.0, max_tokens=96, seed=1)
    stopping = [c[0] for c in vllm_tiny.generate(prompts, SamplingConfig(**settings))]
    assert any(c.finish_reason == "stop" and len(c.token_ids) < 96 for c in stopping)
    fixed = [c[0] for c in vllm_tiny.generate(prompts, SamplingConfig(**settings, ignore_eos=True))]
    assert all(len(c.token_ids) == 96 for c in fixed)
    assert any(tok.eos_token_id in c.token_ids for c in fixed)
    with pytest.raises(LlmgenError, match="cannot generate with return_entropy"):
        vllm_tiny.generate(prompts, SamplingConfig(return_entropy=True))
