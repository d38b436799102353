"""Unlearning losses against hand computations on tiny tensors, and their registry wrappers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from llmgen.errors import LlmgenError
from llmgen.unlearning import (
    check_beta,
    check_method,
    dpo_loss,
    ga_loss,
    kl_ref_policy,
    nll_loss,
    npo_loss,
    npo_weight,
    simnpo_loss,
)

LOGP = torch.tensor([-2.0, -4.0], dtype=torch.float64)
REF = torch.tensor([-3.0, -3.0], dtype=torch.float64)


def test_ga_and_nll_by_hand():
    assert ga_loss(LOGP).item() == pytest.approx(-3.0)
    assert nll_loss(LOGP).item() == pytest.approx(3.0)


def test_npo_by_hand():
    beta = 0.1
    # log ratios are +1 and -1: (2/β)·mean log(1 + exp(β·r))
    expected = (2 / beta) * (math.log(1 + math.exp(0.1)) + math.log(1 + math.exp(-0.1))) / 2
    assert npo_loss(LOGP, REF, beta).item() == pytest.approx(expected, rel=1e-12)
    # the ratio form (πθ/πref)^β with probabilities
    ratio = [(math.exp(a) / math.exp(b)) ** beta for a, b in zip(LOGP.tolist(), REF.tolist(), strict=True)]
    assert npo_loss(LOGP, REF, beta).item() == pytest.approx((2 / beta) * sum(math.log1p(r) for r in ratio) / 2)


def test_npo_equals_2_log2_over_beta_at_reference():
    assert npo_loss(REF, REF, 0.5).item() == pytest.approx(4 * math.log(2))


def test_npo_tends_to_ga_plus_constant_as_beta_goes_to_zero():
    ga = ga_loss(LOGP - REF).item()  # GA on log πθ minus a constant (the reference)
    gaps = []
    for beta in (1e-1, 1e-2, 1e-3, 1e-4):
        gaps.append(abs(npo_loss(LOGP, REF, beta).item() - 2 * math.log(2) / beta - ga))
    assert gaps[-1] < 1e-4
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))


def _tiny_policy(seed: int = 0):
    """A 'model' with parameters whose sequence log-probs are differentiable: 3 sequences of 2
    tokens over a 5-token vocabulary, logits = W @ features."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 3], [0, 4], [2, 2]])

    def logp():
        lp = (feats @ w.T).log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
        return lp.sum(-1)

    return w, logp


def test_npo_gradient_is_weighted_ga_gradient():
    beta = 0.3
    w, logp = _tiny_policy()
    ref = logp().detach() + torch.tensor([0.7, -1.2, 0.1], dtype=torch.float64)
    (g_npo,) = torch.autograd.grad(npo_loss(logp(), ref, beta), w)
    lp = logp()
    weights = npo_weight(lp, ref, beta).detach()
    # GA gradient of each example, weighted by 2πθ^β/(πθ^β+πref^β) computed from probabilities
    expected = torch.zeros_like(w)
    for i in range(3):
        (g_ga,) = torch.autograd.grad(ga_loss(logp()[i : i + 1]), w)
        p, q = math.exp(lp[i].item()), math.exp(ref[i].item())
        hand = 2 * p**beta / (p**beta + q**beta)
        assert weights[i].item() == pytest.approx(hand, rel=1e-9)
        expected += hand * g_ga / 3
    torch.testing.assert_close(g_npo, expected)


def test_dpo_by_hand():
    beta = 0.2
    win, win_ref = torch.tensor([-5.0]), torch.tensor([-6.0])
    lose, lose_ref = torch.tensor([-3.0]), torch.tensor([-2.0])
    margin = (-5 + 6) - (-3 + 2)  # = 2
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * margin)))
    assert dpo_loss(win, win_ref, lose, lose_ref, beta).item() == pytest.approx(expected, rel=1e-6)


def test_simnpo_by_hand():
    beta, delta = 2.5, 0.5
    lp, n = torch.tensor([-6.0, -2.0]), torch.tensor([3, 4])
    hand = [-(2 / beta) * math.log(1 / (1 + math.exp(-(-beta * x / k - delta)))) for x, k in [(-6, 3), (-2, 4)]]
    assert simnpo_loss(lp, n, beta, delta).item() == pytest.approx(sum(hand) / 2, rel=1e-6)


def test_kl_against_direct_sum():
    from scipy.stats import entropy

    g = torch.Generator().manual_seed(1)
    logits, ref = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    hand = 0.0
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                hand += entropy(ref[b, t].softmax(-1).numpy(), logits[b, t].softmax(-1).numpy())
    assert kl_ref_policy(logits, ref, mask).item() == pytest.approx(hand / 2, rel=1e-5)
    assert kl_ref_policy(ref, ref, mask).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("beta", [0, -0.1, "x"])
def test_bad_beta_is_a_clear_error(beta):
    with pytest.raises(LlmgenError, match="beta"):
        check_beta(beta)
    with pytest.raises(LlmgenError, match="beta"):
        check_method("npo", {"beta": beta})


def test_check_method():
    assert check_method("npo") == {"beta": 0.1}
    assert check_method("npo_rt", {"alpha": 2}) == {"beta": 0.1, "alpha": 2.0}
    with pytest.raises(LlmgenError, match="unknown unlearning method 'npx'"):
        check_method("npx")
    with pytest.raises(LlmgenError, match="no argument 'alpha'"):
        check_method("npo", {"alpha": 1.0})  # plain NPO has no retain term to weigh


def test_registered_losses_on_a_tiny_model():
    from llmgen.models import tiny_model
    from llmgen.training import LOSSES, LossState
    from llmgen.training.losses import loss_aligned_streams, loss_needs_reference, loss_streams

    assert loss_streams(LOSSES.get("npo")) == ("forget",)
    assert loss_needs_reference(LOSSES.get("npo")) and not loss_needs_reference(LOSSES.get("ga"))
    assert loss_streams(LOSSES.get("npo_rt")) == ("forget", "retain")
    # IdkDPO compares two answers to the same question: its "idk" stream is paired with "forget"
    assert loss_aligned_streams(LOSSES.get("idkdpo_rt")) == ("idk",) and loss_aligned_streams(LOSSES.get("npo")) == ()

    model, _ = tiny_model(seed=0)
    ref = copy.deepcopy(model).eval()

    def part(seed):
        ids = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(seed))
        labels = ids.clone()
        labels[:, :3] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batch = {"forget": part(0), "retain": part(1)}
    state = LossState(args={"beta": 0.1}, ref_model=ref, policy=model, ref_mode="copy")
    npo, logs = LOSSES.get("npo")(model, batch, state)
    assert npo.item() == pytest.approx(20 * math.log(2), rel=1e-5)  # πθ = πref at the start
    assert float(logs["npo_weight"]) == pytest.approx(1.0)
    ga, _ = LOSSES.get("ga")(model, batch, LossState())
    state_rt = LossState(args={"beta": 0.1, "alpha": 0.5}, ref_model=ref, policy=model, ref_mode="copy")
    npo_rt, logs_rt = LOSSES.get("npo_rt")(model, batch, state_rt)
    assert npo_rt.item() == pytest.approx(npo.item() + 0.5 * float(logs_rt["retain_nll"]), rel=1e-5)
    state_kl = LossState(args={"alpha": 1.0}, ref_model=ref, policy=model, ref_mode="copy")
    kl, logs_kl = LOSSES.get("kl")(model, batch, state_kl)
    assert float(logs_kl["retain_kl"]) == pytest.approx(0.0, abs=1e-5)
    assert kl.item() == pytest.approx(ga.item(), rel=1e-5)
    npo.backward()  # gradients flow
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
