"""TOFU's prompts, answer tag, evaluated subset, IdkDPO answers and fine-tuning batch against the
reference code (locuslab/tofu, locuslab/open-unlearning), written out here, on real TOFU rows."""

from __future__ import annotations

import copy
import hashlib
import math
import random
from importlib.resources import files
from pathlib import Path

import pytest

from llmgen.backends.base import encode_pair
from llmgen.config import load_config, recipe_config
from llmgen.prompts.chat import render_prompt
from llmgen.recipes.npo_unlearning import (
    IdkRows,
    UnlearnConfig,
    finetune_train,
    idk_answers,
    qa_features,
    training_streams,
    unlearn_train,
)
from llmgen.tasks.tofu import MODEL_TEMPLATES, REFERENCE_DS_SIZE, load_eval_sets, load_tofu, tofu_task

REAL = Path(__file__).parents[2] / "fixtures" / "tofu"  # the first rows of TOFU's own files

# locuslab/tofu config/model_config.yaml (question_start_tag, question_end_tag, answer_tag), and
# whether the family's tokenizer adds a BOS with add_special_tokens=True (Llama-2: <s>; Phi-1.5: none).
TOFU_MODEL_CONFIG = {"llama2": ("[INST] ", " [/INST]", "", "<s>"), "phi": ("Question: ", "\n", "Answer: ", "")}

# The reference values the paper-scale config must carry (TOFU: config/finetune.yaml + README's
# 2-GPU torchrun, config/eval_everything.yaml, config/model_config.yaml; open-unlearning:
# configs/trainer/{finetune,NPO,GradDiff,SimNPO,DPO}.yaml, configs/experiment/unlearn/tofu/default.yaml).
REFERENCE = {
    "model": "meta-llama/Llama-2-7b-chat-hf", "data": "locuslab/TOFU", "forget_split": "forget10",
    "prompt_template": "llama2", "ds_size": 300, "eval.max_new_tokens": 200,
    "train.lr": 1e-5, "train.effective_batch": 32, "train.epochs": 10.0, "train.weight_decay": 0.01,
    "train.schedule": "linear", "warmup_epochs": 1.0,
    "finetune.lr": 1e-5, "finetune.effective_batch": 32, "finetune.epochs": 5.0, "finetune.weight_decay": 0.01,
    "finetune.schedule": "linear", "finetune.max_length": 500,
    "method_args": {"ga": {"gamma": 1.0}, "gd": {"gamma": 1.0, "alpha": 1.0}, "npo": {"beta": 0.1, "gamma": 1.0},
                    "npo_rt": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0}, "idkdpo": {"beta": 0.1, "gamma": 1.0},
                    "simnpo": {"beta": 4.5, "delta": 0.0, "gamma": 0.125}},
}


def bos_adding(tok):
    """A copy of the tiny tokenizer made to add ``<s>`` with add_special_tokens=True, as Llama-2's
    does (a copy: the byte tokenizer's Rust object may be shared)."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tok)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                              special_tokens=[("<s>", tok.bos_token_id)])
    return tok


@pytest.fixture
def tok():
    from llmgen.models import tiny_model

    return tiny_model(seed=0)[1]


def tofu_format(tok, family: str, question: str, answer: str) -> tuple[list[int], list[int]]:
    """locuslab/tofu ``data_module.convert_raw_data_to_model_format`` written out (without padding:
    input ids + the EOS that is the first pad, labels with the question tokens at -100)."""
    start, end, tag, _ = TOFU_MODEL_CONFIG[family]
    new_question = start + question + end
    num_question_tokens = len(tok(new_question, add_special_tokens=True)["input_ids"])
    ids = tok(new_question + tag + answer, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    return ids, [-100] * num_question_tokens + ids[num_question_tokens:]


def ou_format(tok, family: str, question: str, answer: str) -> tuple[list[int], list[int]]:
    """locuslab/open-unlearning ``src/data/utils.py: preprocess_chat_instance`` (no chat template)
    written out: the prompt ends with the assistant tag, which is masked. One deliberate change: the
    tag's trailing space is scored with the answer (the masked prompt is ``wrapped.rstrip(" ")``),
    as lm-eval's pairs split; the reference masks ``len(tokenize(wrapped))`` positions, which is the
    same where the tokenizer keeps the space a token of its own and one answer token too many where
    it merges the space into the first answer word (GPT-2-style BPE: `` The``)."""
    start, end, tag, _ = TOFU_MODEL_CONFIG[family]
    wrapped = start + question + end + tag
    ids = tok(wrapped + answer, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    n = len(tok(wrapped.rstrip(" "), add_special_tokens=True)["input_ids"])
    return ids, [-100] * n + ids[n:]


def test_family_templates_are_tofus_and_open_unlearnings():
    for family, (start, end, tag, bos) in TOFU_MODEL_CONFIG.items():
        t = MODEL_TEMPLATES[family]
        assert (t.question_start, t.question_end, t.answer_tag, t.bos) == (start, end, tag, bos)
    # the generic default: TOFU's tags for base models (phi, stablelm, pythia), no BOS text
    d = MODEL_TEMPLATES["default"]
    assert (d.question_start, d.question_end, d.answer_tag, d.bos) == ("Question: ", "\n", "Answer: ", "")


@pytest.mark.parametrize("family", ["llama2", "phi"])
def test_training_features_are_the_references_on_real_rows(tok, family):
    """Item 2 and 3: fine-tuning/unlearning features with BOS where the family's tokenizer adds one;
    ``answer_tag=scored`` is TOFU's masking, ``context`` open-unlearning's."""
    tok = bos_adding(tok) if TOFU_MODEL_CONFIG[family][3] else tok
    rows = load_tofu(REAL, "forget10")[:3]
    for answer_tag, reference in (("scored", tofu_format), ("context", ou_format)):
        feats = qa_features(rows, tok, family, 500, "forget", answer_tag=answer_tag)
        for row, f in zip(rows, feats, strict=True):
            ids, labels = reference(tok, family, row["question"], row["answer"])
            assert (f["input_ids"], f["labels"]) == (ids, labels), (family, answer_tag)
            if family == "llama2":
                assert f["input_ids"][0] == tok.bos_token_id and f["input_ids"][1] != tok.bos_token_id
    if family == "phi":  # "Answer:" (7 byte tokens) is scored by TOFU, masked by open-unlearning; its space is scored by both
        scored = qa_features(rows[:1], tok, family, 500, "f", answer_tag="scored")[0]["labels"]
        context = qa_features(rows[:1], tok, family, 500, "f", answer_tag="context")[0]["labels"]
        assert sum(x != -100 for x in scored) - sum(x != -100 for x in context) == len(tok("Answer:")["input_ids"]) == 7


def test_evaluation_tokens_are_the_training_tokens(tok):
    """Item 2: the evaluation's scored pair (``run_requests``: ``encode_pair`` of the rendered context
    and the continuation, + EOS) is the training sequence, BOS included, for Llama-2."""
    tok = bos_adding(tok)
    row = load_eval_sets(REAL, "forget10", 1)["forget"][0]
    task = tofu_task(REAL, "forget10", ds_size=1, prompt_template="llama2", roles=("forget",))
    req = task.doc_requests({**row, "split": "forget"})[0]
    ctx, cont = encode_pair(tok, render_prompt(tok, req.prompt), req.continuation)
    ids, labels = tofu_format(tok, "llama2", row["question"], row["answer"])
    assert ctx + cont + [tok.eos_token_id] == ids and ctx[0] == tok.bos_token_id
    assert len(ctx) == labels.count(-100)
    gen = task.doc_requests({**row, "split": "forget"})[-1].prompt
    assert gen == "<s>[INST] " + row["question"] + " [/INST]"


def _tofu_probability(model, ids: list[int], labels: list[int]) -> float:
    """TOFU ``evaluate_util``: ``get_batch_loss`` (summed CE over labels != -100, shifted) and
    P̃ = exp(−loss / num_token_gt)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    target = torch.tensor(labels[1:])
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
    return math.exp(-loss.item() / int((target != -100).sum()))


def test_answer_tag_in_the_tofu_probability(tiny_model_dir):
    """Item 3, hand-computed on the tiny model: with ``answer_tag=scored`` the forget probability is
    TOFU's (``Answer: `` scored with the answer), with ``context`` open-unlearning's; results record it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmgen.backends import get_backend
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig, evaluate_task

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = load_eval_sets(REAL, "forget10", 2)["forget"]
    backend = get_backend("hf", tiny_model_dir)
    probs = {}
    for answer_tag, reference in (("scored", tofu_format), ("context", ou_format)):
        task = tofu_task(REAL, "forget10", ds_size=2, prompt_template="phi", answer_tag=answer_tag, max_new_tokens=1,
                         roles=("forget",))
        assert task.describe()["answer_tag"] == answer_tag  # results.json `tasks`
        _, out = evaluate_task(backend, task, EvalConfig(model=tiny_model_dir, cache=None), RequestCache(None))
        probs[answer_tag] = [r["metrics"]["prob"] for r in out]
        for row, p in zip(rows, probs[answer_tag], strict=True):
            assert p == pytest.approx(_tofu_probability(model, *reference(tok, "phi", row["question"], row["answer"])),
                                      rel=1e-4)
    backend.close()
    assert probs["scored"] != pytest.approx(probs["context"], rel=1e-3)


def test_ds_size_defaults_to_tofus_300(monkeypatch):
    """Item 4: locuslab/tofu config/eval_everything.yaml ``ds_size: 300``: the recipe, the retain logs
    and ``llmgen eval --tasks tofu_*`` keep the first 300 rows of each set by default."""
    import inspect

    from llmgen.recipes.npo_unlearning import make_retain_logs
    from llmgen.tasks.tofu import env_ds_size

    assert REFERENCE_DS_SIZE == 300 and UnlearnConfig().ds_size == 300
    assert inspect.signature(make_retain_logs).parameters["eval_limit"].default == 300
    assert inspect.signature(tofu_task).parameters["ds_size"].default == 300
    monkeypatch.delenv("LLMGEN_TOFU_DS_SIZE", raising=False)
    assert env_ds_size() == 300
    monkeypatch.setenv("LLMGEN_TOFU_DS_SIZE", "all")
    assert env_ds_size() is None
    monkeypatch.setenv("LLMGEN_TOFU_DS_SIZE", "40")
    assert env_ds_size() == 40
    # 300 of forget10's 400 rows, as TOFU's get_dataloader ``select(range(min(ds_size, len)))``
    rows = [{"question": str(i), "answer": "a"} for i in range(400)]
    assert len(rows[: UnlearnConfig().eval_size()]) == min(300, 400)




def test_idk_answers_are_tofus_file():
    """Item 5: the 100 lines of locuslab/tofu ``data/idontknow.jsonl`` (commit bdc209e), unchanged."""
    answers = idk_answers()
    assert len(answers) == 100 == len(set(answers))
    assert answers[:3] == ["I'm not certain about that.", "That's beyond my current knowledge base.",
                           "I don't have that information."]
    assert answers[-1] == "I'm not sure I can help with that."
    # sha256 of locuslab/tofu bdc209e:data/idontknow.jsonl, as fetched
    shipped = Path(str(files("llmgen") / "data" / "idontknow.jsonl")).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == "eb9a1e32a6f4112088306e1a65d297240f75513dd5223b2acb326454675fd605"


def test_idk_answers_are_drawn_for_every_item_every_time(tok):
    """Item 5: each read of a row draws an answer at random (TOFU's ``torch.randint(0, len(idk))`` per
    ``__getitem__``), from a generator seeded by the run seed; hand-computed with ``random.Random``."""
    answers = idk_answers()
    rows = IdkRows(["q0", "q1"], answers, lambda q, a: {"q": q, "a": a}, seed=7)
    got = [rows[i % 2] for i in range(6)]
    r = random.Random(7)
    assert got == [{"q": f"q{i % 2}", "a": answers[r.randrange(100)]} for i in range(6)]
    assert len({rows[0]["a"] for _ in range(300)}) > 90  # all 100 reachable, not a fixed cycle
    again = IdkRows(["q0", "q1"], answers, lambda q, a: {"q": q, "a": a}, seed=7)
    assert [again[i % 2] for i in range(6)] == got  # the same run seed, the same draws
    # through the recipe's streams on the real rows: row i of "idk" asks forget question i
    streams = training_streams({"idk"}, str(REAL), "forget10", tok, "phi", 500, seed=0)
    forget = load_tofu(REAL, "forget10")
    assert len(streams["idk"]) == len(forget)
    text = tok.decode(streams["idk"][3]["input_ids"])
    assert text.startswith("Question: " + forget[3]["question"]) and any(a in text for a in answers)


def test_finetune_effective_batch_is_tofus_32():
    """Item 6: TOFU's released checkpoint-625 = 4000 rows × 5 epochs / 32 per optimizer step."""
    f = finetune_train()
    assert f.batch_size * f.grad_accum == 32 and f.epochs == 5.0
    assert math.ceil(4000 / (f.batch_size * f.grad_accum)) * int(f.epochs) == 625
    assert UnlearnConfig().finetune == f


def _value(cfg: UnlearnConfig, key: str):
    section, _, name = key.partition(".")
    if name == "effective_batch":
        t = getattr(cfg, section)
        return t.batch_size * t.grad_accum
    return getattr(getattr(cfg, section), name) if name else getattr(cfg, key)


def test_gpu_config_carries_the_reference_values():
    """The paper-scale config (Llama-2-7b-chat on TOFU forget10) against the reference table."""
    cfg = load_config(UnlearnConfig, recipe_config("npo_unlearning", "gpu"))
    cfg.validate()
    for key, want in REFERENCE.items():
        if key != "method_args":
            assert _value(cfg, key) == want, key
    for method in cfg.methods:
        ref = REFERENCE["method_args"][method]
        assert {k: v for k, v in cfg.args_of(method).items() if k in ref} == ref, method
    assert UnlearnConfig().train == unlearn_train()
    start, end, tag, bos = TOFU_MODEL_CONFIG["llama2"]
    t = MODEL_TEMPLATES[cfg.prompt_template]
    assert (t.question_start, t.question_end, t.answer_tag, t.bos) == (start, end, tag, bos)
