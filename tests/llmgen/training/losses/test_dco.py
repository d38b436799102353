"""The DCO loss: weight and objective against high-precision references, gradients against
autograd of −log(1 − (1 − p)^N), N = 1 equal to cross-entropy, dropping, refill, bad input."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from llmgen.errors import LlmgenError
from llmgen.recipes.confidence_limiting.refill import refill_keep
from llmgen.training.losses import LOSSES, LossState, ce_loss, register_loss
from llmgen.training.losses.dco import (
    dco_loss,
    dco_objective,
    dco_weight,
    dco_weighted_loss,
    success_rate_weight,
)

LOGPS = [-700.0, -40.0, -12.0, -5.0, -2.0, -0.7, -0.1, -1e-3, -1e-7]
NS = [1, 2, 4, 16, 256, 2.5]


def _mp_reference(s: float, n: float) -> tuple[float, float]:
    """(F, ℓ) at log p = s, computed with 400 digits (enough for 1 − p at p = e^-700)."""
    with mpmath.workdps(400):
        p = mpmath.exp(s)
        q = 1 - p
        cover = 1 - q**n
        return float(n * q ** (n - 1) * p / cover), float(-mpmath.log(cover))


def _naive_objective(s: torch.Tensor, n: float) -> torch.Tensor:
    return -torch.log(1 - (1 - torch.exp(s)) ** n)


@pytest.mark.parametrize("n", NS)
def test_weight_and_objective_match_high_precision(n):
    s = torch.tensor(LOGPS, dtype=torch.float64)
    w, obj = dco_weight(s, n), dco_objective(s, n)
    for i, si in enumerate(LOGPS):
        ref_w, ref_obj = _mp_reference(si, n)
        assert w[i].item() == pytest.approx(ref_w, rel=1e-12, abs=1e-300)
        assert obj[i].item() == pytest.approx(ref_obj, rel=1e-12, abs=1e-300)


def test_weight_limits():
    s = torch.tensor([-math.inf, -1e4, 0.0], dtype=torch.float64)
    assert dco_weight(s, 16).tolist() == [1.0, 1.0, 0.0]  # F → 1 as p → 0, F → 0 as p → 1
    assert dco_weight(s, 1).tolist() == [1.0, 1.0, 1.0]   # N = 1 is CE exactly
    assert dco_objective(torch.tensor([0.0]), 8).item() == 0.0
    # ℓ ≈ −log(N p) when N p is tiny, where the closed form would return −log(0)
    assert dco_objective(torch.tensor([-800.0]), 4).item() == pytest.approx(800 - math.log(4), rel=1e-14)


@pytest.mark.parametrize("n", [1, 3, 16])
def test_weight_is_minus_autograd_derivative(n):
    # moderate p, where the naive formula is accurate in float64: dℓ/ds = −F
    s = torch.tensor([-6.0, -2.0, -0.9, -0.3, -0.05], dtype=torch.float64, requires_grad=True)
    _naive_objective(s, n).sum().backward()
    torch.testing.assert_close(dco_weight(s.detach(), n), -s.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n", [1, 2, 16])
@pytest.mark.parametrize("normalization", ["sum", "token_mean", "example_mean"])
def test_loss_value_and_gradient_match_autograd(n, normalization):
    # p near 0 (s = −15), middling, and near 1 (s = −1e-4)
    s64 = torch.tensor([-15.0, -3.0, -0.5, -1e-4], dtype=torch.float64)
    ntok = torch.tensor([5, 3, 2, 1])
    s = s64.clone().float().requires_grad_(True)
    loss, logs = dco_weighted_loss(s, ntok, dco_weight(s.detach(), n), dco_objective(s.detach(), n),
                                   threshold=0.0, normalization=normalization)
    loss.backward()
    ref_s = s64.clone().requires_grad_(True)
    if normalization == "example_mean":  # the reference: mean over examples of ℓ / |y|
        ref = (_naive_objective(ref_s, n) / ntok).mean()
    else:
        scale = len(s64) if normalization == "sum" else int(ntok.sum())
        ref = _naive_objective(ref_s, n).sum() / scale
    ref.backward()
    assert logs["dco_objective"] == pytest.approx(ref.item(), rel=1e-5)  # ℓ, logged beside the loss
    torch.testing.assert_close(s.grad.double(), ref_s.grad, rtol=1e-5, atol=1e-9)
    # the loss itself is the F-weighted NLL (the reference's value for example_mean)
    w, lengths = dco_weight(s64, n), (ntok.double() if normalization == "example_mean" else torch.ones(4))
    scale = int(ntok.sum()) if normalization == "token_mean" else 4
    assert loss.item() == pytest.approx((w * -s64 / lengths).sum().item() / scale, rel=1e-5)


@pytest.fixture(scope="module")
def tiny():
    from llmgen.models import TinyConfig, tiny_model

    model, tok = tiny_model(seed=1, config=TinyConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                      num_attention_heads=1))
    return model, tok


def _batch(tok, pairs):
    rows = [tok(p + a, add_special_tokens=False)["input_ids"] for p, a in pairs]
    n_prompt = [len(tok(p, add_special_tokens=False)["input_ids"]) for p, _ in pairs]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    att = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (r, k) in enumerate(zip(rows, n_prompt, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
        labels[i, k : len(r)] = torch.tensor(r[k:])
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


PAIRS = [("2+2=", "4"), ("1+2=", "3"), ("3+3=", "6"), ("Q: 9-1? A:", "8")]


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("n", [4, 300])
def test_model_gradient_equals_dco_objective_gradient(tiny, n):
    # one-token answers under a random byte model: p ≈ 1/259, so N = 300 sits where F is far from 1
    model, tok = tiny
    batch = _batch(tok, PAIRS)
    model.zero_grad()
    loss, logs = dco_loss(model, batch, LossState(args={"N": n, "threshold": 0.0, "normalization": "sum"}))
    loss.backward()
    got = _grads(model)
    model.zero_grad()
    from llmgen.training.losses import sequence_logprobs

    seq, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    ref = _naive_objective(seq.double(), n).mean()
    ref.backward()
    assert logs["dco_objective"] == pytest.approx(ref.item(), rel=1e-5)
    for g, r in zip(got, _grads(model), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    assert 0 < logs["dco_weight"] < 1


def test_n1_equals_cross_entropy(tiny):
    model, tok = tiny
    batch = _batch(tok, PAIRS)
    model.zero_grad()
    ce, _ = ce_loss(model, batch, LossState())
    ce.backward()
    ce_grads = _grads(model)
    model.zero_grad()
    loss, logs = LOSSES.get("dco")(model, batch, LossState(args={"N": 1, "normalization": "token_mean"}))
    loss.backward()
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    for g, r in zip(_grads(model), ce_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-8)
    assert logs["dco_dropped"] == 0.0


def test_threshold_drops_confident_examples():
    s = torch.tensor([-0.01, -5.0], requires_grad=True)  # confident, unsure
    w = dco_weight(s.detach(), 16)
    loss, logs = dco_weighted_loss(s, torch.tensor([1, 1]), w, dco_objective(s.detach(), 16), 0.1, "sum")
    loss.backward()
    assert logs["dco_dropped"] == 0.5
    assert s.grad[0].item() == 0.0 and s.grad[1].item() < 0
    s.grad = None
    loss, logs = dco_weighted_loss(s, torch.tensor([1, 1]), w, dco_objective(s.detach(), 16), 1.1, "sum")
    loss.backward()  # everything dropped: zero loss, still differentiable
    assert loss.item() == 0.0 and logs["dco_dropped"] == 1.0 and s.grad.abs().sum() == 0


def test_low_weight_examples_reaching_the_loss_are_kept_and_divided_by_the_batch_size():
    # F = [1, .8, .5, .05], NLL/|y| = [0.5, 1.0, 1.5, 2.0] (|y| = 2): the reference's
    # custom_loss_function1(...).mean() keeps the F = 0.05 example, weighted, over the batch of 4
    f = torch.tensor([1.0, 0.8, 0.5, 0.05], dtype=torch.float64)
    ntok = torch.tensor([2, 2, 2, 2])
    s = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    loss, logs = dco_weighted_loss(s, ntok, f, torch.zeros(4, dtype=torch.float64), None, "example_mean")
    by_hand = (1 * 0.5 + 0.8 * 1.0 + 0.5 * 1.5 + 0.05 * 2.0) / 4  # = 0.5375
    assert loss.item() == pytest.approx(by_hand) and logs["dco_dropped"] == 0.0
    loss.backward()
    torch.testing.assert_close(s.grad, -(f / 2 / 4).float())  # d/ds of F·(−s)/|y| / B
    # the former in-loss filter, an option: F <= 0.1 dropped, divided by the 3 kept
    dropped, logs = dco_weighted_loss(s, ntok, f, torch.zeros(4, dtype=torch.float64), 0.1, "example_mean")
    assert dropped.item() == pytest.approx((0.5 + 0.8 + 0.75) / 3) and logs["dco_dropped"] == 0.25
    # the loss's default keeps everything: no threshold unless one is given
    from llmgen.training.losses.dco import _loss_options

    assert _loss_options(LossState(args={"N": 4}))[1] is None


def _reference_factor(p: torch.Tensor, n: float) -> torch.Tensor:
    """The reference's F (allanraventos/refine NCO.f): closed form, or a [2/2] rational
    approximation where N·p < 0.1."""
    p = p.double()
    if n == 1:
        return torch.ones_like(p)
    small = (1 - (n - 1) * p + (n - 1) * (n - 2) * p * p / 2) / (1 - (n - 1) / 2 * p + (n - 1) * (n - 2) / 6 * p * p)
    return torch.where(p * n < 0.1, small, n * (1 - p) ** (n - 1) * p / (1 - (1 - p) ** n))


def _reference_loss(model, batch, n: float) -> torch.Tensor:
    """NCO.custom_loss_function1(...).mean(), written out: per example F·(summed NLL)/|y|, averaged."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                            ignore_index=-100, reduction="none").reshape(labels.shape)
    seq = -nll.sum(-1)
    factor = _reference_factor(torch.exp(seq.detach()), n)
    return (-seq / (labels != -100).sum(-1).clamp(min=1) * factor).mean()


@pytest.mark.parametrize("n", [4, 300])
def test_example_mean_gradient_is_the_reference_loss(tiny, n):
    model, tok = tiny
    pairs = [("2+2=", "4"), ("12+30=", "42"), ("Q: 9-1? A:", "8 apples")]  # answers of 1, 2 and 8 tokens
    batch = _batch(tok, pairs)
    model.zero_grad()
    loss, _ = dco_loss(model, batch, LossState(args={"N": n, "threshold": 0.0}))  # default: example_mean
    loss.backward()
    got = _grads(model)
    model.zero_grad()
    _reference_loss(model, batch, n).float().backward()
    for g, r in zip(got, _grads(model), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-8)


def test_refill_keep_is_reference_factor_above_threshold(tiny):
    model, tok = tiny
    # one-token answers have p ≈ 1/259 (F ≈ 0 at N = 3000), eight-token answers p ≈ 0 (F ≈ 1)
    batch = _batch(tok, [("1+1=", "2"), ("Q: 9-1? A:", "8 apples"), ("3+3=", "6"), ("a", "bcdefghi")])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        lp = torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        seq = (lp * (labels != -100)).sum(-1)
    factor = _reference_factor(torch.exp(seq), 3000)
    expected = (factor > 0.1).tolist()
    assert expected == [False, True, False, True]  # both sides of the threshold are exercised
    assert refill_keep(3000, 0.1)(model, batch).tolist() == expected
    assert refill_keep(1, 0.1)(model, batch).tolist() == [True] * 4  # N = 1: F = 1, CE keeps all


def _recording_loss():
    """A CE loss that records the first input token id of every example it trains on."""
    from llmgen.training.losses import LOSSES, ce_loss

    seen: list[list[int]] = []
    if "record_ce_test" not in LOSSES:
        @register_loss("record_ce_test")
        def record(model, batch, state):
            state.args["seen"].append(batch["input_ids"][:, 0].tolist())
            return ce_loss(model, batch, state)
    return seen


def test_training_loop_scores_each_batch_with_current_weights_and_refills(tiny, tmp_path):
    """keep_fn runs on every candidate micro-batch with the weights of that moment; rejected
    examples never reach the loss; batches are refilled to full size; one schedule for the run."""
    import copy

    from llmgen.training import TrainConfig, train
    from llmgen.training.data import prompt_answer_dataset

    model, tok = tiny
    model = copy.deepcopy(model)
    letters = "ABCDEFGHIJKL"  # 12 examples; those starting with a vowel are always rejected
    records = [{"prompt": f"{c}:", "answer": str(i)} for i, c in enumerate(letters)]
    feats = prompt_answer_dataset(records, tok)
    rejected = {tok(c, add_special_tokens=False)["input_ids"][0] for c in "AEI"}
    seen = _recording_loss()
    snapshots: list[torch.Tensor] = []

    def keep(m, batch):
        snapshots.append(next(m.parameters()).detach().clone())
        assert not m.training and not torch.is_grad_enabled()
        return [int(x) not in rejected for x in batch["input_ids"][:, 0]]

    result = train(TrainConfig(loss="record_ce_test", loss_args={"seen": seen}, lr=1e-2, epochs=2, batch_size=3,
                               schedule="linear", output_dir=str(tmp_path), save_final=False, progress=False),
                   model=model, tokenizer=tok, train_dataset=feats, keep_fn=keep)
    trained = [t for batch in seen for t in batch]
    assert not rejected & set(trained)
    assert all(len(b) == 3 for b in seen)  # every batch refilled to full size
    # 2 epochs x 12 candidates, 3 of 12 rejected: 18 kept = 6 full steps out of the planned 8
    assert result.steps == 6 and len(snapshots) == 8
    assert result.history[-1]["refill_dropped"] == 6
    # the weights seen by keep_fn change as training proceeds: scored with the current model
    assert not torch.equal(snapshots[0], snapshots[-1])
    # one linear schedule planned for 8 steps (lr_t = lr·(1 − t/8)), never restarted
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert lrs == pytest.approx([1e-2 * (1 - t / 8) for t in range(1, 7)])


def test_refill_resumes_exactly_after_a_crash(tmp_path):
    """The refill's position (candidates drawn, examples waiting) is saved with each checkpoint."""
    from llmgen.models import TinyConfig, tiny_model
    from llmgen.training import TrainConfig, train
    from llmgen.training.data import prompt_answer_dataset

    shape = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1)

    def fresh():
        model, tok = tiny_model(seed=2, config=shape)
        feats = prompt_answer_dataset([{"prompt": f"{c}:", "answer": str(i)} for i, c in enumerate("ABCDEFGHIJKL")], tok)
        return model, tok, feats

    from llmgen.models import byte_tokenizer

    vowels = {byte_tokenizer()(c, add_special_tokens=False)["input_ids"][0] for c in "AEI"}

    def keep(m, batch):  # rejects examples whose prompt starts with a vowel (3 of 12)
        return [int(x) not in vowels for x in batch["input_ids"][:, 0]]

    cfg = dict(lr=1e-2, epochs=2, batch_size=3, save_every=2, eval_every=1, schedule="linear", save_final=False,
               progress=False)
    model, tok, feats = fresh()
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **cfg), model=model, tokenizer=tok,
                 train_dataset=feats, keep_fn=keep)

    def crash(_m, step):
        if step == 5:
            raise RuntimeError("simulated crash")

    model, tok, feats = fresh()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(output_dir=str(tmp_path / "cut"), **cfg), model=model, tokenizer=tok, train_dataset=feats,
              keep_fn=keep, eval_fn=crash)
    model, tok, feats = fresh()
    resumed = train(TrainConfig(output_dir=str(tmp_path / "cut"), resume=True, **cfg), model=model, tokenizer=tok,
                    train_dataset=feats, keep_fn=keep)
    assert resumed.resumed_from.endswith("step-4") and resumed.steps == full.steps == 6
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_success_rate_weight():
    w = success_rate_weight([0.0, 0.5, 1.0], 4)
    assert w[0].item() == 1.0 and w[2].item() == 0.0
    assert w[1].item() == pytest.approx(4 * 0.5**3 * 0.5 / (1 - 0.5**4))
    with pytest.raises(LlmgenError, match=r"\[0, 1\]"):
        success_rate_weight([1.5], 4)


@pytest.mark.parametrize("bad", [0, -1, 0.5, math.inf, "16", True])
def test_bad_n_is_a_clear_error(tiny, bad):
    with pytest.raises(LlmgenError, match="N >= 1"):
        dco_weight(torch.tensor([-1.0]), bad)
    model, tok = tiny
    with pytest.raises(LlmgenError, match="N >= 1"):
        dco_loss(model, _batch(tok, PAIRS[:1]), LossState(args={"N": bad}))


def test_bad_normalization_and_logp():
    s = torch.tensor([-1.0])
    with pytest.raises(LlmgenError, match="normalization"):
        dco_weighted_loss(s, torch.tensor([1]), s, s, 0.1, "mean")
    with pytest.raises(LlmgenError, match="<= 0"):
        dco_weight(torch.tensor([0.5]), 2)


def test_dco_a_weights_ce_by_success_rate(tiny):
    from llmgen.training.data import pad_collate

    model, tok = tiny
    batch = _batch(tok, PAIRS)
    rates = [0.0, 0.05, 0.5, 1.0]
    feats = [{"input_ids": r[m].tolist(), "labels": lab[m].tolist(), "success_rate": q}
             for r, lab, m, q in zip(batch["input_ids"], batch["labels"], batch["attention_mask"].bool(), rates,
                                     strict=True)]
    collated = pad_collate(feats, tok.pad_token_id)  # the loop's collator carries the extra column
    model.zero_grad()
    loss, logs = LOSSES.get("dco_a")(model, collated, LossState(args={"N": 8, "threshold": 0.1, "normalization": "sum"}))
    loss.backward()
    got = _grads(model)
    assert logs["dco_dropped"] == 0.5  # p = 0.5 and p = 1 give F < 0.1 at N = 8
    model.zero_grad()
    from llmgen.training.losses import sequence_logprobs

    seq, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    w = success_rate_weight(rates, 8).float()
    ((w * (w > 0.1)) * -seq).sum().div(2).backward()
    for g, r in zip(got, _grads(model), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-8)
    with pytest.raises(LlmgenError, match="success_rate"):
        LOSSES.get("dco_a")(model, batch, LossState(args={"N": 8}))


def test_estimate_success_rates_with_hf_backend(tiny):
    from llmgen.backends.base import SamplingConfig
    from llmgen.backends.hf import HFBackend
    from llmgen.recipes.confidence_limiting.refill import estimate_success_rates

    model, tok = tiny
    backend = HFBackend("tiny", model_obj=model, tokenizer_obj=tok)
    prompts = ["1+1=", "2+2="]
    # what the model samples under this seed, drawn here once; the answer of problem 1 is its first
    # sample's first character and of problem 2 a string the byte model cannot produce in 3 tokens
    outs = backend.generate(prompts, SamplingConfig(n=3, temperature=1.0, max_tokens=3, seed=0))
    first = outs[0][0].text[:1]
    answers = [first, "impossible"]

    def starts_with_answer(text: str, answer: str) -> bool:
        return text.startswith(answer)

    expected = [sum(c.text.startswith(first) for c in outs[0]) / 3, 0.0]
    assert expected[0] >= 1 / 3
    rates = estimate_success_rates(backend, prompts, answers, k=3, max_tokens=3, seed=0, grader=starts_with_answer)
    assert rates == expected
    # the default grader (math answer equivalence) on the same samples
    from llmgen.tasks.math_answers import grade

    rates = estimate_success_rates(backend, prompts, answers, k=3, max_tokens=3, seed=0)
    assert rates == [sum(grade(c.text, a) for c in o) / 3 for o, a in zip(outs, answers, strict=True)]
    with pytest.raises(LlmgenError, match="k >= 1"):
        estimate_success_rates(backend, ["1+1="], ["2"], k=0)
