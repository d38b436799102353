"""Unlearning losses against hand computations on tiny tensors, and their registry wrappers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmgen.errors import LlmgenError
from llmgen.training.losses.unlearning import (
    check_beta,
    check_method,
    dpo_loss,
    ga_loss,
    kl_batchmean,
    kl_ref_policy,
    npo_loss,
    npo_weight,
    simnpo_loss,
    token_mean_logprob,
)

LOGP = torch.tensor([-2.0, -4.0], dtype=torch.float64)
REF = torch.tensor([-3.0, -3.0], dtype=torch.float64)


def test_ga_by_hand():
    assert ga_loss(LOGP).item() == pytest.approx(-3.0)


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
    """open-unlearning SimNPO: −(2/β)·log σ(β·(NLL/|y| − δ)), δ inside the β scale."""
    beta, delta = 4.5, 0.5
    lp, n = torch.tensor([-6.0, -2.0]), torch.tensor([3, 4])
    # NLL/|y| = 2 and 0.5; minus δ: 1.5 and 0
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    hand = [-(2 / beta) * math.log(sig(beta * 1.5)), -(2 / beta) * math.log(sig(0.0))]
    assert simnpo_loss(lp, n, beta, delta).item() == pytest.approx(sum(hand) / 2, rel=1e-6)
    assert check_method("simnpo_rt") == {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0}


def test_token_mean_is_hfs_causal_lm_loss():
    """GA and the retain NLL use the token mean over the batch (HF's ``model(**batch).loss``)."""
    from llmgen.models import tiny_model

    model, _ = tiny_model(seed=0)
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[0, :4], labels[1, :6] = -100, -100  # answers of 5 and 3 tokens
    from llmgen.training.losses import token_logprobs

    lp, mask = token_logprobs(model, ids, torch.ones_like(ids), labels)
    hf = model(input_ids=ids, labels=labels).loss
    assert token_mean_logprob(lp, mask).item() == pytest.approx(-hf.item(), rel=1e-5)
    # by hand on tensors: (−1 −2 −3 + −4) / 4, not the mean of per-sequence sums
    t = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert token_mean_logprob(t, m).item() == pytest.approx(-2.5)


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
    # the reference form: every one of the B·T positions, divided by B·T (torch's batchmean KL)
    every = sum(entropy(ref[b, t].softmax(-1).numpy(), logits[b, t].softmax(-1).numpy())
                for b in range(2) for t in range(3))
    assert kl_batchmean(logits, ref).item() == pytest.approx(every / 6, rel=1e-5)
    torch_kl = F.kl_div(logits.log_softmax(-1).view(-1, 6), ref.log_softmax(-1).view(-1, 6), reduction="batchmean",
                        log_target=True)
    assert kl_batchmean(logits, ref).item() == pytest.approx(torch_kl.item(), rel=1e-5)


@pytest.mark.parametrize("beta", [0, -0.1, "x"])
def test_bad_beta_is_a_clear_error(beta):
    with pytest.raises(LlmgenError, match="beta"):
        check_beta(beta)
    with pytest.raises(LlmgenError, match="beta"):
        check_method("npo", {"beta": beta})


def test_check_method():
    assert check_method("npo") == {"beta": 0.1, "gamma": 1.0}
    assert check_method("npo_rt", {"alpha": 2}) == {"beta": 0.1, "gamma": 1.0, "alpha": 2.0}
    assert check_method("gd")["ga_reduction"] == "mean" and check_method("npo_kl")["kl_reduction"] == "batchmean"
    with pytest.raises(LlmgenError, match="unknown ga_reduction 'max'"):
        check_method("ga", {"ga_reduction": "max"})
    with pytest.raises(LlmgenError, match="gamma must be >= 0"):
        check_method("gd", {"gamma": -1})
    with pytest.raises(LlmgenError, match="unknown unlearning method 'npx'"):
        check_method("npx")
    with pytest.raises(LlmgenError, match="no argument 'alpha'"):
        check_method("npo", {"alpha": 1.0})  # plain NPO has no retain term to weigh


def test_registered_losses_on_a_tiny_model():
    from llmgen.models import tiny_model
    from llmgen.training import LossState, get_loss
    from llmgen.training.losses import loss_aligned_streams, loss_needs_reference, loss_streams

    assert loss_streams(get_loss("npo")) == ("forget",)
    assert loss_needs_reference(get_loss("npo")) and not loss_needs_reference(get_loss("ga"))
    assert loss_streams(get_loss("npo_rt")) == ("forget", "retain")
    # IdkDPO compares two answers to the same question: its "idk" stream is paired with "forget"
    assert loss_aligned_streams(get_loss("idkdpo_rt")) == ("idk",) and loss_aligned_streams(get_loss("npo")) == ()

    model, _ = tiny_model(seed=0)
    ref = copy.deepcopy(model).eval()

    def part(seed):
        ids = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(seed))
        labels = ids.clone()
        labels[:, :3] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batch = {"forget": part(0), "retain": part(1)}
    state = LossState(args={"beta": 0.1}, ref_model=ref, policy=model, ref_mode="copy")
    npo, logs = get_loss("npo")(model, batch, state)
    assert npo.item() == pytest.approx(20 * math.log(2), rel=1e-5)  # πθ = πref at the start
    assert float(logs["npo_weight"]) == pytest.approx(1.0)
    ga, _ = get_loss("ga")(model, batch, LossState())
    state_rt = LossState(args={"beta": 0.1, "alpha": 0.5}, ref_model=ref, policy=model, ref_mode="copy")
    npo_rt, _ = get_loss("npo_rt")(model, batch, state_rt)
    assert npo_rt.item() == pytest.approx(_npo_rt_by_hand(model, ref, batch, 0.1, 0.5), rel=1e-5)
    state_kl = LossState(args={"alpha": 1.0}, ref_model=ref, policy=model, ref_mode="copy")
    kl, logs_kl = get_loss("kl")(model, batch, state_kl)
    assert float(logs_kl["retain_kl"]) == pytest.approx(0.0, abs=1e-5)
    assert kl.item() == pytest.approx(ga.item(), rel=1e-5)
    # GA is minus HF's token-mean loss on the forget batch; the summed form is the named option
    f = batch["forget"]
    assert ga.item() == pytest.approx(-model(input_ids=f["input_ids"], labels=f["labels"]).loss.item(), rel=1e-5)
    ga_sum, _ = get_loss("ga")(model, batch, LossState(args={"ga_reduction": "sum"}))
    assert ga_sum.item() == pytest.approx(_seq_logp(model, f).mean().item(), rel=1e-5)
    npo.backward()  # gradients flow
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _seq_logp(model, part) -> torch.Tensor:
    """Summed answer log-probability per sequence, written out here (gather over log-softmax)."""
    ids, labels = part["input_ids"], part["labels"]
    logp = model(input_ids=ids, attention_mask=part["attention_mask"]).logits.float().log_softmax(-1)
    out = []
    for b in range(ids.size(0)):
        out.append(sum(logp[b, t - 1, labels[b, t]] for t in range(1, ids.size(1)) if labels[b, t] != -100))
    return torch.stack(out)


def _npo_rt_by_hand(model, ref, batch, beta: float, alpha: float) -> float:
    """NPO on summed forget log-ratios + α · token-mean retain NLL (open-unlearning ``NPO``)."""
    with torch.no_grad():
        ratio = (_seq_logp(model, batch["forget"]) - _seq_logp(ref, batch["forget"])).tolist()
        npo = sum(-(2 / beta) * math.log(1 / (1 + math.exp(beta * r))) for r in ratio) / len(ratio)
        r = batch["retain"]
        logp = model(input_ids=r["input_ids"]).logits.float().log_softmax(-1)
        nll = [-float(logp[b, t - 1, r["labels"][b, t]]) for b in range(r["input_ids"].size(0))
               for t in range(1, r["input_ids"].size(1)) if r["labels"][b, t] != -100]
    return npo + alpha * sum(nll) / len(nll)


ALL_METHODS = ["ga", "gd", "kl", "npo", "npo_rt", "npo_kl", "idkdpo", "idkdpo_rt", "simnpo", "simnpo_rt"]


@pytest.fixture(scope="module")
def tofu_streams():
    """Real tokenised TOFU training streams (the recipe's own features) from the real TOFU rows."""
    from pathlib import Path

    from llmgen.models import tiny_model
    from llmgen.recipes.npo_unlearning import training_streams
    from llmgen.tasks.tofu import QA_PROMPT_TEMPLATE

    _, tok = tiny_model(seed=0)
    folder = Path(__file__).parents[3] / "fixtures" / "tofu"
    streams = training_streams({"forget", "retain", "idk"}, str(folder), "forget10", tok, QA_PROMPT_TEMPLATE, 160)
    return {k: v[:8] for k, v in streams.items()}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_a_real_training_step(method, tofu_streams, tmp_path):
    """One optimizer step of the shared loop: finite loss, parameters move."""
    from llmgen.models import tiny_model
    from llmgen.training import TrainConfig, train
    from llmgen.training.losses.unlearning import get_method

    model, tok = tiny_model(seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    streams = {k: v for k, v in tofu_streams.items() if k in get_method(method).streams}
    cfg = TrainConfig(loss=method, loss_args=check_method(method), lr=1e-3, max_steps=1, batch_size=4,
                      output_dir=str(tmp_path), save_final=False, progress=False, max_length=160)
    res = train(cfg, model=model, tokenizer=tok, train_dataset=streams)
    losses = [r["loss"] for r in res.history if "loss" in r]
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, res.model.parameters(), strict=True))


def _batch(streams, names, n=4):
    from llmgen.training.data import pad_collate

    return {k: pad_collate(streams[k][:n], pad_token_id=0) for k in names}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_gradient_signs(method, tofu_streams):
    """Descending the forget term lowers the forget log-likelihood (first order: the loss gradient
    points along the forget log-likelihood gradient); descending the NLL retain term raises the
    retain log-likelihood; IdkDPO's term raises the "I don't know" answers over the forget ones. At
    a policy moved off the reference, so the KL term has a gradient too."""
    from llmgen.models import tiny_model
    from llmgen.training import LossState, get_loss
    from llmgen.training.losses.unlearning import get_method

    model, _ = tiny_model(seed=0)
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    batch = _batch(tofu_streams, get_method(method).streams)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad(value):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, allow_unused=False)])

    def loss_grad(**args):
        state = LossState(args=check_method(method, args), ref_model=ref, policy=model, ref_mode="copy")
        return grad(get_loss(method)(model, batch, state)[0])

    forget_only = {"alpha": 0.0} if "alpha" in check_method(method) else {}
    g_forget_ll = grad(_seq_logp(model, batch["forget"]).sum())
    if "idk" in batch:
        # DPO: descending raises the margin log π(idk) − log π(forget) (the gradient is −c·∇margin)
        g_margin = grad(_seq_logp(model, batch["idk"]).sum()) - g_forget_ll
        assert torch.dot(loss_grad(**forget_only), g_margin) < 0
    else:
        assert torch.dot(loss_grad(**forget_only), g_forget_ll) > 0  # −lr·g lowers the forget likelihood
    if "retain" in batch:
        g_retain = loss_grad(gamma=0.0)
        g_retain_ll = grad(_seq_logp(model, batch["retain"]).sum())
        if method in ("kl", "npo_kl"):
            assert g_retain.abs().sum() > 0  # the KL pulls back towards the reference
        else:
            assert torch.dot(g_retain, g_retain_ll) < 0  # descending it raises the retain likelihood
