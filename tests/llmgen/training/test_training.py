"""The shared training core: losses, masking, reference models, LoRA, data, checkpoint/resume."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from llmgen.errors import LlmgenError
from llmgen.models import byte_tokenizer, load_model, tiny_model
from llmgen.training import (
    LOSSES,
    LossState,
    TrainConfig,
    model_inputs,
    register_loss,
    sequence_logprobs,
    token_logprobs,
    train,
)
from llmgen.training.data import (
    batch_indices,
    build_dataset,
    encode_prompt_answer,
    load_records,
    pad_collate,
    prompt_answer_dataset,
    text_dataset,
)
from llmgen.training.modeling import add_lora, frozen_copy

RECORDS = [{"prompt": f"Q{i}: ", "answer": f"ans {i % 5} xyz"} for i in range(40)]


def _pa_data(tok, n=40):
    return prompt_answer_dataset(RECORDS[:n], tok)


def test_ce_loss_decreases_and_writes_run(tmp_path):
    model, tok = tiny_model(0)
    res = train(TrainConfig(output_dir=str(tmp_path), lr=3e-3, max_steps=20, batch_size=8, warmup_steps=2),
                model=model, tokenizer=tok, train_dataset=_pa_data(tok))
    losses = [r["loss"] for r in res.history if "loss" in r]
    assert len(losses) == 20 and res.steps == 20
    assert losses[-1] < 0.3 * losses[0]
    assert res.final_loss == pytest.approx(losses[-1])
    assert res.tokens > 0 and res.tokens_per_s > 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 20
    # warmup: lr ramps linearly over the first 2 steps, then decays linearly to 0
    assert rows[0]["lr"] == pytest.approx(3e-3 / 2) and rows[1]["lr"] == pytest.approx(3e-3)
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    # final/ loads through llmgen.models and scores the answer better than the untrained model
    loaded, ltok = load_model(res.final_path)
    batch = pad_collate(_pa_data(ltok, 4), ltok.pad_token_id)
    fresh, _ = tiny_model(0)
    with torch.no_grad():
        trained_lp, _ = sequence_logprobs(loaded, **batch)
        base_lp, _ = sequence_logprobs(fresh, **batch)
    assert (trained_lp > base_lp + 5).all()


def test_answer_only_masking_token_by_token():
    tok = byte_tokenizer()
    prompt, answer = "Q: 12+3=", "15"
    feat = encode_prompt_answer(tok, prompt, answer, max_length=64)
    p_ids = tok(prompt)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert feat["input_ids"] == p_ids + a_ids + [tok.eos_token_id]
    assert feat["labels"] == [-100] * len(p_ids) + a_ids + [tok.eos_token_id]
    scored = [t for t, lab in zip(feat["input_ids"], feat["labels"], strict=True) if lab != -100]
    assert tok.decode(scored) == "15</s>"

    short = encode_prompt_answer(tok, "ab", "cdef", max_length=4)  # truncation keeps labels aligned
    assert short["input_ids"] == tok("abcd")["input_ids"] and short["labels"][:2] == [-100, -100]
    assert encode_prompt_answer(tok, "abcdef", "g", max_length=4) is None  # no answer token left

    batch = pad_collate([feat, encode_prompt_answer(tok, "Q: 1+1=", "2", 64)], tok.pad_token_id)
    width = batch["input_ids"].shape[1]
    assert width == len(feat["input_ids"])
    row = batch["labels"][1].tolist()
    n1 = len(tok("Q: 1+1=")["input_ids"])
    assert row == [-100] * n1 + tok("2")["input_ids"] + [tok.eos_token_id] + [-100] * (width - n1 - 2)
    assert batch["attention_mask"][1].tolist() == [1] * (n1 + 2) + [0] * (width - n1 - 2)
    assert (batch["input_ids"][1, n1 + 2:] == tok.pad_token_id).all()

    # the ce loss is the mean NLL over exactly those answer positions
    model, _ = tiny_model(0)
    loss, _ = LOSSES.get("ce")(model, batch, LossState())
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    nll = []
    for b in range(2):
        for t in range(1, width):
            lab = batch["labels"][b, t].item()
            if lab != -100:
                nll.append(-logp[b, t - 1, lab].item())
    assert len(nll) == 3 + 2
    assert loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-5)


def test_text_data_scores_every_token():
    tok = byte_tokenizer()
    feats = text_dataset([{"text": "hello"}, {"text": ""}], tok, max_length=16)
    assert len(feats) == 1  # an empty text has nothing to learn but EOS alone: dropped
    assert feats[0]["labels"] == feats[0]["input_ids"] == tok("hello")["input_ids"] + [tok.eos_token_id]


def test_reference_logprobs_lora_disabled_equal_frozen_copy(tmp_path):
    model, tok = tiny_model(0)
    copy = frozen_copy(model)
    lora = add_lora(model, TrainConfig(lora_r=4))
    batch = pad_collate(_pa_data(tok, 6), tok.pad_token_id)
    by_adapter = LossState(policy=lora, ref_mode="adapter").ref_sequence_logprobs(batch)[0]
    by_copy = LossState(ref_model=copy, ref_mode="copy").ref_sequence_logprobs(batch)[0]
    with torch.no_grad():
        policy = sequence_logprobs(lora, **batch)[0]
    assert torch.allclose(by_adapter, by_copy, atol=1e-5)
    assert torch.allclose(policy, by_copy, atol=1e-5)  # LoRA B = 0 at init

    # after LoRA training the adapter-disabled reference is still the base model; the policy moved
    train(TrainConfig(output_dir=str(tmp_path), lr=1e-2, max_steps=5, batch_size=8, save_final=False),
          model=lora, tokenizer=tok, train_dataset=_pa_data(tok))
    lora.eval()
    after = LossState(policy=lora, ref_mode="adapter").ref_sequence_logprobs(batch)[0]
    assert torch.allclose(after, by_copy, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(sequence_logprobs(lora, **batch)[0], by_copy, atol=1e-2)
    tlp, mask = LossState(policy=lora, ref_mode="adapter").ref_token_logprobs(batch)
    assert tlp.shape == mask.shape == (6, batch["input_ids"].shape[1] - 1)
    assert torch.allclose(tlp.sum(-1), by_copy, atol=1e-5)


if "test_ref_gap" not in LOSSES:
    @register_loss("test_ref_gap", needs_reference=True)
    def _ref_gap_loss(model, batch, state):
        """CE, logging how far the policy is from the reference (0 at the first step)."""
        lp, n = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        ref, _ = state.ref_sequence_logprobs(batch)
        return -lp.sum() / n.sum(), {"gap": (lp.detach() - ref).abs().max(), "ref_mode_copy": state.ref_mode == "copy"}


@pytest.mark.parametrize("lora_r", [0, 4])
def test_loop_prepares_reference_only_when_asked(tmp_path, lora_r):
    model, tok = tiny_model(0)
    res = train(TrainConfig(output_dir=str(tmp_path), loss="test_ref_gap", lr=1e-2, max_steps=4, batch_size=8,
                            lora_r=lora_r, save_final=False), model=model, tokenizer=tok, train_dataset=_pa_data(tok))
    gaps = [r["gap"] for r in res.history]
    assert gaps[0] < 1e-4 and gaps[-1] > 1e-3  # reference = initial weights, policy moves away
    assert all(r["ref_mode_copy"] == (lora_r == 0) for r in res.history)


def test_lora_with_gradient_checkpointing_trains_adapters(tmp_path):
    model, tok = tiny_model(0)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train(TrainConfig(output_dir=str(tmp_path), lr=1e-2, max_steps=6, batch_size=8, lora_r=4,
                            lora_targets="q_proj,v_proj", gradient_checkpointing=True),
                model=model, tokenizer=tok, train_dataset=_pa_data(tok))
    peft_model = res.model
    assert peft_model.get_base_model().is_gradient_checkpointing
    lora_b = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 4 and all(p.abs().sum() > 0 for p in lora_b.values())
    for n, p in peft_model.get_base_model().named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert torch.equal(p, base_before[key]), n
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.trainable_params == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    # final/ is an adapter that loads on top of the base model
    base_dir = tmp_path / "base"
    tiny_model(0, save_to=base_dir)
    loaded, _ = load_model(str(base_dir), adapter=res.final_path)
    batch = pad_collate(_pa_data(tok, 3), tok.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(sequence_logprobs(loaded, **batch)[0], sequence_logprobs(peft_model, **batch)[0],
                              atol=1e-4)


if "test_paired" not in LOSSES:
    @register_loss("test_paired", streams=("forget", "retain"))
    def _paired_loss(model, batch, state):
        """Gradient ascent on forget + CE on retain; logs which retain rows were drawn."""
        f_lp, f_n = sequence_logprobs(model, *model_inputs(batch["forget"]))
        r_lp, r_n = sequence_logprobs(model, *model_inputs(batch["retain"]))
        state.args.setdefault("seen", []).append(batch["retain"]["row_id"].tolist())
        return f_lp.sum() / f_n.sum() - r_lp.sum() / r_n.sum(), {"forget_lp": f_lp.mean().detach()}


def test_paired_streams_retain_cycles(tmp_path):
    model, tok = tiny_model(0)
    forget = _pa_data(tok, 12)
    retain = [dict(f, row_id=i) for i, f in enumerate(_pa_data(tok, 5))]
    cfg = TrainConfig(output_dir=str(tmp_path), loss="test_paired", lr=1e-3, epochs=2, batch_size=4, save_final=False)
    seen: list = []
    cfg.loss_args = {"seen": seen}
    res = train(cfg, model=model, tokenizer=tok, train_dataset={"forget": forget, "retain": retain})
    assert res.steps == 6  # 12 forget rows / 4 per batch × 2 epochs: the forget stream sets the epoch
    assert len(seen) == 6 and all(len(b) == 4 or len(b) == 1 for b in seen)
    flat = [i for b in seen for i in b]
    assert sorted(flat[:5]) == list(range(5))  # one full pass over retain, then it cycles
    assert len(flat) > 5
    with pytest.raises(LlmgenError, match="needs data streams forget, retain"):
        train(cfg, model=model, tokenizer=tok, train_dataset=forget)


if "test_aligned" not in LOSSES:
    @register_loss("test_aligned", streams=("forget", "idk", "retain"), aligned=("idk",))
    def _aligned_loss(model, batch, state):
        """Records the row ids of each stream's micro-batch."""
        f_lp, f_n = sequence_logprobs(model, *model_inputs(batch["forget"]))
        state.args["seen"].append({k: batch[k]["row_id"].tolist() for k in ("forget", "idk", "retain")})
        return f_lp.sum() / f_n.sum(), {}


def test_aligned_stream_follows_the_first_streams_order(tmp_path):
    model, tok = tiny_model(0)
    forget = [dict(f, row_id=i) for i, f in enumerate(_pa_data(tok, 12))]
    idk = [dict(f, row_id=i) for i, f in enumerate(_pa_data(tok, 12))]
    retain = [dict(f, row_id=i) for i, f in enumerate(_pa_data(tok, 12))]
    seen: list = []
    cfg = TrainConfig(output_dir=str(tmp_path), loss="test_aligned", lr=1e-3, epochs=2, batch_size=4,
                      save_final=False, loss_args={"seen": seen})
    train(cfg, model=model, tokenizer=tok, train_dataset={"forget": forget, "idk": idk, "retain": retain})
    assert len(seen) == 6
    assert all(b["idk"] == b["forget"] for b in seen)  # paired row by row, through a reshuffle
    assert any(b["retain"] != b["forget"] for b in seen)  # the unaligned stream has its own order
    with pytest.raises(LlmgenError, match="stream 'idk' is paired row by row with 'forget'"):
        train(cfg, model=model, tokenizer=tok, train_dataset={"forget": forget, "idk": idk[:5], "retain": retain})


def test_data_order_is_a_function_of_seed_and_epoch():
    a = [batch_indices(10, 3, seed=1, micro=m, world=1, rank=0) for m in range(8)]
    assert a == [batch_indices(10, 3, seed=1, micro=m, world=1, rank=0) for m in range(8)]
    assert sorted(i for e, idx in a[:4] for i in idx) == list(range(10))  # epoch 0 covers all rows
    assert [e for e, _ in a] == [0] * 4 + [1] * 4
    assert [i for _, idx in a[:4] for i in idx] != [i for _, idx in a[4:] for i in idx]  # reshuffled
    r0 = batch_indices(10, 3, seed=1, micro=3, world=2, rank=0)[1]
    r1 = batch_indices(10, 3, seed=1, micro=3, world=2, rank=1)[1]
    assert len(r0) == len(r1) == 3  # the short last batch is padded so DDP ranks stay in step
    first = [i for m in range(2) for r in (0, 1) for i in batch_indices(10, 3, 1, m, 2, r)[1]]
    assert len(first) == 12 and set(first) == set(range(10))  # one epoch on 2 ranks: all rows, 2 repeats


def test_eval_hook_runs_every_n_steps(tmp_path):
    model, tok = tiny_model(0)
    calls = []

    def eval_fn(m, step):
        calls.append((step, m.training, torch.is_grad_enabled()))
        return {"answer_lp": float(step)}

    res = train(TrainConfig(output_dir=str(tmp_path), max_steps=5, eval_every=2, batch_size=4, save_final=False),
                model=model, tokenizer=tok, train_dataset=_pa_data(tok, 12), eval_fn=eval_fn)
    assert calls == [(2, False, False), (4, False, False), (5, False, False)]
    assert [r["step"] for r in res.history if "eval_answer_lp" in r] == [2, 4, 5]


def test_stop_and_resume_full_finetune_equals_uninterrupted(tmp_path):
    """In-process crash (an exception from the eval hook) after a checkpoint, then resume."""
    cfg = dict(lr=3e-3, max_steps=8, batch_size=6, grad_accum=2, save_every=3, eval_every=1,
               schedule="cosine", warmup_steps=2, save_final=False)

    model, tok = tiny_model(0)
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **cfg), model=model, tokenizer=tok,
                 train_dataset=_pa_data(tok))

    def crash(_m, step):
        if step == 7:
            raise RuntimeError("simulated crash")

    model, tok = tiny_model(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(output_dir=str(tmp_path / "cut"), **cfg), model=model, tokenizer=tok,
              train_dataset=_pa_data(tok), eval_fn=crash)
    model, tok = tiny_model(0)  # fresh weights: everything must come from the checkpoint
    resumed = train(TrainConfig(output_dir=str(tmp_path / "cut"), resume=True, **cfg), model=model,
                    tokenizer=tok, train_dataset=_pa_data(tok))
    assert resumed.resumed_from.endswith("step-6")
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-6)
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n
    steps = [r["step"] for r in resumed.history if "loss" in r]
    assert steps == list(range(1, 9))  # metrics before the checkpoint kept, none duplicated
    with pytest.raises(LlmgenError, match="cannot resume: checkpoint has batch_size=6"):
        train(TrainConfig(output_dir=str(tmp_path / "cut"), resume=True, **dict(cfg, batch_size=5)),
              model=model, tokenizer=tok, train_dataset=_pa_data(tok))


def test_resume_refuses_any_changed_setting_that_matters(tmp_path):
    """A changed lr, schedule length, loss argument, ... is an error naming the field, found before
    any model loads; settings of reporting and saving may change."""
    cfg = dict(lr=3e-3, max_steps=4, batch_size=4, save_every=2, save_final=False)
    model, tok = tiny_model(0)
    train(TrainConfig(output_dir=str(tmp_path), **cfg), model=model, tokenizer=tok, train_dataset=_pa_data(tok, 8))
    for key, value, shown in [("lr", 1e-2, "lr=0.003"), ("max_steps", 9, "max_steps=4"),
                              ("schedule", "cosine", "schedule='linear'"), ("loss_args", {"beta": 0.1}, "loss_args={}"),
                              ("adam_betas", (0.9, 0.95), "adam_betas=[0.9, 0.999]")]:
        with pytest.raises(LlmgenError, match=f"cannot resume: checkpoint has {re.escape(shown)}"):
            train(TrainConfig(output_dir=str(tmp_path), resume=True, **dict(cfg, **{key: value})),
                  model="not loaded: the check comes first", tokenizer=tok, train_dataset=_pa_data(tok, 8))
    model, tok = tiny_model(0)
    res = train(TrainConfig(output_dir=str(tmp_path), resume=True, log_every=2, keep_checkpoints=3, **cfg),
                model=model, tokenizer=tok, train_dataset=_pa_data(tok, 8))
    assert res.resumed_from.endswith("step-2") and res.steps == 4


def test_fresh_rerun_killed_leaves_no_old_results_beside_new_metrics(tmp_path):
    cfg = dict(lr=3e-3, max_steps=3, batch_size=4)
    model, tok = tiny_model(0)
    train(TrainConfig(output_dir=str(tmp_path), save_every=1, **cfg), model=model, tokenizer=tok,
          train_dataset=_pa_data(tok, 8))
    assert (tmp_path / "results.json").is_file() and (tmp_path / "final").is_dir()

    def crash(_m, step):
        if step == 2:
            raise RuntimeError("killed")

    model, tok = tiny_model(1)
    with pytest.raises(RuntimeError, match="killed"):
        train(TrainConfig(output_dir=str(tmp_path), eval_every=1, **cfg), model=model, tokenizer=tok,
              train_dataset=_pa_data(tok, 8), eval_fn=crash)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "final").exists()
    assert not (tmp_path / "checkpoints").exists()  # the old run's checkpoints cannot be resumed into the new one
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]

    model, tok = tiny_model(0)
    train(TrainConfig(output_dir=str(tmp_path), **cfg), model=model, tokenizer=tok, train_dataset=_pa_data(tok, 8))
    with pytest.raises(LlmgenError, match="holds a finished run and no checkpoint"):
        train(TrainConfig(output_dir=str(tmp_path), resume=True, **cfg), model=model, tokenizer=tok,
              train_dataset=_pa_data(tok, 8))


def test_bad_data_gives_clear_errors(tmp_path):
    tok = byte_tokenizer()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(LlmgenError, match=r"row 2: missing field 'answer'"):
        build_dataset(str(bad), tok, data_format="prompt_answer")
    other = tmp_path / "other.jsonl"
    other.write_text('{"question": "a"}\n')
    with pytest.raises(LlmgenError, match="missing field 'prompt'/'answer' or 'text'"):
        build_dataset(str(other), tok)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LlmgenError, match="empty dataset"):
        build_dataset(str(empty), tok)
    with pytest.raises(LlmgenError, match="file not found"):
        build_dataset(str(tmp_path / "nope.jsonl"), tok)
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("prompt,reply\nhi,there\n")
    with pytest.raises(LlmgenError, match="missing field 'answer'"):
        build_dataset(str(csv_file), tok, data_format="prompt_answer")
    with pytest.raises(LlmgenError, match="has no example with an answer token"):
        prompt_answer_dataset([{"prompt": "x" * 20, "answer": "y"}], tok, max_length=8)
    model, _ = tiny_model(0)
    with pytest.raises(LlmgenError, match="row 1: missing field 'input_ids'"):
        train(TrainConfig(output_dir=str(tmp_path / "r")), model=model, tokenizer=tok, train_dataset=[{"text": "a"}])
    with pytest.raises(LlmgenError, match="unknown loss 'nope'"):
        train(TrainConfig(output_dir=str(tmp_path / "r"), loss="nope"), model=model, tokenizer=tok,
              train_dataset=_pa_data(tok))
    with pytest.raises(LlmgenError, match="unknown schedule"):
        TrainConfig(schedule="exp").validate()
    assert not (tmp_path / "r").exists()  # nothing written before the inputs were checked


def test_csv_and_hf_datasets_sources(tmp_path):
    import datasets

    csv_file = tmp_path / "d.csv"
    csv_file.write_text("prompt,answer\nQ1: ,a1\nQ2: ,a2\n")
    assert load_records(csv_file) == [{"prompt": "Q1: ", "answer": "a1"}, {"prompt": "Q2: ", "answer": "a2"}]
    datasets.Dataset.from_list([{"text": "abc"}, {"text": "de"}]).save_to_disk(str(tmp_path / "hf"))
    feats = build_dataset(str(tmp_path / "hf"), byte_tokenizer())
    assert len(feats) == 2 and feats[1]["labels"] == feats[1]["input_ids"]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list([{"text": "x"}])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(LlmgenError, match="has no split 'train'"):
        load_records(tmp_path / "dd")


def test_token_logprobs_shapes_and_sum():
    model, tok = tiny_model(0)
    batch = pad_collate(_pa_data(tok, 3), tok.pad_token_id)
    lp, mask = token_logprobs(model, **batch)
    seq, n = sequence_logprobs(model, **batch)
    assert lp.shape == (3, batch["input_ids"].shape[1] - 1)
    assert torch.allclose(lp.sum(-1), seq) and torch.equal(mask.sum(-1), n)
    assert (lp[~mask] == 0).all() and (lp[mask] < 0).all()
    assert math.isfinite(seq.sum().item())
