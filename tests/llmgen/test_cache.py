"""The request cache as a wrapper around a backend: a miss for every key part that changes, a hit otherwise."""

from dataclasses import replace

import pytest
import torch

from llmgen.backends import SamplingConfig, get_backend
from llmgen.backends.cached import CachedBackend
from llmgen.backends.hf import HFBackend
from llmgen.cache import RequestCache
from llmgen.models import load_model, tiny_model

PROMPTS = ["abc", "hello wor"]
BASE = SamplingConfig(n=2, temperature=0.9, top_p=0.95, max_tokens=5, stop=("\n",), seed=1)


class CountingBackend(HFBackend):
    """The real tiny HF backend, counting the requests that reach the model."""

    def __init__(self, inner: HFBackend) -> None:
        self.__dict__.update(inner.__dict__)
        self.calls = 0

    def generate(self, prompts, sampling):
        self.calls += len(prompts)
        return super().generate(prompts, sampling)

    def loglikelihood(self, requests):
        self.calls += len(requests)
        return super().loglikelihood(requests)


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    return get_backend("hf", tiny_model_dir)


@pytest.fixture()
def cache(tmp_path):
    c = RequestCache(tmp_path / "c.sqlite")
    yield c
    c.close()


def _misses(backend, cache, sampling=BASE) -> int:
    counting = CountingBackend(backend)
    CachedBackend(counting, cache).generate(PROMPTS, sampling)
    return counting.calls


def test_hit_when_nothing_changes(tiny_hf, cache):
    first = CachedBackend(tiny_hf, cache).generate(PROMPTS, BASE)
    assert _misses(tiny_hf, cache) == 0
    again = CachedBackend(tiny_hf, cache).generate(PROMPTS, BASE)
    assert [[c.text for c in g] for g in again] == [[c.text for c in g] for g in first]
    assert again[0][0].token_ids == first[0][0].token_ids and again[0][0].logprobs == first[0][0].logprobs


@pytest.mark.parametrize("change", [dict(n=3), dict(temperature=0.5), dict(top_p=0.9), dict(max_tokens=6),
                                    dict(stop=("x",)), dict(seed=2), dict(seed=None)])
def test_miss_for_each_sampling_setting(tiny_hf, cache, change):
    CachedBackend(tiny_hf, cache).generate(PROMPTS, BASE)
    assert _misses(tiny_hf, cache, replace(BASE, **change)) == len(PROMPTS)


def test_miss_for_another_prompt_and_per_request_settings(tiny_hf, cache):
    CachedBackend(tiny_hf, cache).generate(PROMPTS, BASE)
    counting = CountingBackend(tiny_hf)
    CachedBackend(counting, cache).generate(PROMPTS + ["new"], [BASE, replace(BASE, seed=5), BASE])
    assert counting.calls == 2  # the second prompt with another seed, and the new prompt


def test_miss_for_another_model(tiny_hf, cache, tmp_path):
    tiny_model(seed=7, save_to=tmp_path / "other")
    other = get_backend("hf", str(tmp_path / "other"))
    CachedBackend(tiny_hf, cache).generate(PROMPTS, BASE)
    assert other.fingerprint != tiny_hf.fingerprint
    assert _misses(other, cache) == len(PROMPTS)


def test_miss_for_an_adapter(tiny_hf, cache, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    with_lora = get_backend("hf", tiny_model_dir, adapter=str(tmp_path / "lora"))
    CachedBackend(tiny_hf, cache).loglikelihood([("ab", "cd")])
    counting = CountingBackend(with_lora)
    CachedBackend(counting, cache).loglikelihood([("ab", "cd")])
    assert counting.calls == 1


def test_miss_for_another_dtype_and_context_length(tiny_model_dir, cache):
    fp32 = get_backend("hf", tiny_model_dir)
    CachedBackend(fp32, cache).generate(PROMPTS, BASE)
    assert _misses(get_backend("hf", tiny_model_dir, dtype="bfloat16"), cache) == len(PROMPTS)
    assert _misses(get_backend("hf", tiny_model_dir, max_length=64), cache) == len(PROMPTS)


def test_in_memory_models_are_fingerprinted_by_content(tiny_model_dir, cache):
    """Same weights → same key (another process may reuse them); changed weights → a miss. Never id()."""
    a, tok = load_model(tiny_model_dir)
    b, _ = load_model(tiny_model_dir)
    mem_a = HFBackend("in-memory", model_obj=a, tokenizer_obj=tok)
    mem_b = HFBackend("in-memory", model_obj=b, tokenizer_obj=tok)
    assert mem_a.fingerprint == mem_b.fingerprint
    CachedBackend(mem_a, cache).loglikelihood([("ab", "cd")])
    counting = CountingBackend(mem_b)
    CachedBackend(counting, cache).loglikelihood([("ab", "cd")])
    assert counting.calls == 0
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    changed = HFBackend("in-memory", model_obj=b, tokenizer_obj=tok)
    assert changed.fingerprint != mem_a.fingerprint
    counting = CountingBackend(changed)
    CachedBackend(counting, cache).loglikelihood([("ab", "cd")])
    assert counting.calls == 1


def test_kinds_do_not_collide_and_results_round_trip(tiny_hf, cache):
    cached = CachedBackend(tiny_hf, cache)
    ll = cached.loglikelihood([("ab", "cd"), ("ab", "cd")])
    assert ll[0] == ll[1] == tiny_hf.loglikelihood([("ab", "cd")])[0]
    roll = cached.loglikelihood_rolling(["abcd"])
    assert roll == tiny_hf.loglikelihood_rolling(["abcd"])
    assert cached.loglikelihood_rolling(["abcd"]) == roll
    assert cache.hits == 1 and len(cache) == 2


def test_progress_moves_per_batch_and_cache_commits_each_batch(tiny_hf, tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RequestCache(path)
    seen: list[int] = []
    prompts = [f"p{i}" for i in range(5)]
    CachedBackend(tiny_hf, cache, batch_size=2).generate(prompts[:3], SamplingConfig(max_tokens=2))
    CachedBackend(tiny_hf, cache, batch_size=2).generate(prompts, SamplingConfig(max_tokens=2), on_batch=seen.append)
    assert seen == [3, 2]
    other = RequestCache(path)  # another connection sees every committed row
    assert len(other) == 5
    other.close()
    cache.close()
