"""``--formats`` on lm-eval's own task configs (installed lm-eval 0.4.13), with local rows in the hub schema.

Each task below is lm-eval's catalogue YAML (``include:``d as is) with only its data source pointed
at a small JSONL file of rows in the task's hub schema (tests/fixtures/lmeval_rows). For every
document, format 0 must give exactly the requests lm-eval's own Task object builds
(``build_all_requests``: contexts and continuations, demonstrations included), and three sampled
formats must render three different prompts (with MMLU-style letter answers following the numbering).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.errors import LlmgenError  # noqa: E402
from llmgen.evaluate import EvalConfig  # noqa: E402
from llmgen.prompts.format_eval import choice_pairs, generation_prompt, run_format_eval  # noqa: E402
from llmgen.prompts.formats import sample_formats  # noqa: E402
from llmgen.prompts.render import answers_in, gold_in, inputs_in, prompt_in, prompt_structure
from llmgen.tasks import get_task  # noqa: E402
from llmgen.tasks.lmeval import INCLUDE_ENV, format_task, local_task_yaml, task_manager  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
ROWS = ROOT / "tests" / "fixtures" / "lmeval_rows"
import lm_eval  # noqa: E402

CATALOGUE = Path(lm_eval.__file__).parent / "tasks"

# test task -> (lm-eval's YAML, {split: rows file}, extra YAML lines)
FAMILIES = {
    "t_mmlu": ("mmlu/default/mmlu_anatomy.yaml", {"test": "mmlu_test.jsonl", "dev": "mmlu_dev.jsonl"},
               "num_fewshot: 2\ntag: []\n"),
    "t_arc_easy": ("arc/arc_easy.yaml", {"train": "arc_easy.jsonl", "validation": "arc_easy.jsonl",
                                         "test": "arc_easy.jsonl"}, "tag: []\n"),
    "t_hellaswag": ("hellaswag/hellaswag.yaml", {"train": "hellaswag.jsonl", "validation": "hellaswag.jsonl"},
                    "tag: []\n"),
    "t_boolq": ("super_glue/boolq/default.yaml", {"train": "boolq.jsonl", "validation": "boolq.jsonl"}, "tag: []\n"),
    "t_truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", {"validation": "truthfulqa.jsonl"}, "tag: []\n"),
    "t_truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", {"validation": "truthfulqa.jsonl"}, "tag: []\n"),
    # process_docs appends "I have no comment." (also in the fixed primer) to every document's answers
    "t_truthfulqa_gen": ("truthfulqa/truthfulqa_gen.yaml", {"validation": "truthfulqa_gen.jsonl"}, "tag: []\n"),
    "t_commonsense_qa": ("commonsense_qa/default.yaml", {"train": "commonsense_qa.jsonl",
                                                         "validation": "commonsense_qa.jsonl"}, ""),
    "t_triviaqa": ("triviaqa/default.yaml", {"train": "triviaqa.jsonl", "validation": "triviaqa.jsonl"},
                   "num_fewshot: 1\n"),
    "t_bbh": ("bbh/fewshot/boolean_expressions.yaml", {"test": "bbh_boolean_expressions.jsonl"}, "tag: []\n"),
    "t_winogrande": ("winogrande/default.yaml", {"train": "winogrande.jsonl", "validation": "winogrande.jsonl"}, "num_fewshot: 1\n"),
    "t_medmcqa": ("medmcqa/medmcqa.yaml", {"train": "medmcqa.jsonl", "validation": "medmcqa.jsonl"}, ""),
    # doc_to_text appends a period to a hypothesis that lacks one (dev_matched row 0 lacks one, row 1 has one)
    "t_mnli": ("glue/mnli/default.yaml", {"train": "mnli.jsonl", "validation_matched": "mnli.jsonl"},
               "tag: []\nnum_fewshot: 1\n"),
    # the real test rows list 8, 10 and 9 options; zero-shot (no public validation rows); a short
    # generation so the CLI test below runs on CPU (the prompt is the catalogue's)
    "t_mmlu_pro": ("mmlu_pro/mmlu_pro_biology.yaml", {"test": "mmlu_pro_test.jsonl"},
                   "tag: []\nnum_fewshot: 0\nfewshot_split: null\ngeneration_kwargs:\n  until:\n    - \"Question:\"\n"
                   "  max_gen_toks: 4\n  do_sample: false\n  temperature: 0.0\n"),
}


# COPA's doc_to_text cuts the premise's last character and picks a connective by the question
UNREADABLE = {"t_copa": ("super_glue/copa/default.yaml", {"train": "copa.jsonl", "validation": "copa.jsonl"}, "tag: []\n")}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """One include folder for the module (lm-eval indexes it once per process: one TaskManager)."""
    folder = tmp_path_factory.mktemp("families")
    for name, (yaml, splits, extra) in {**FAMILIES, **UNREADABLE}.items():
        files = {k: str(ROWS / v) for k, v in splits.items()}
        (folder / f"{name}.yaml").write_text(local_task_yaml(name, CATALOGUE / yaml, files, extra))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(INCLUDE_ENV, str(folder))
        yield folder


def lm_eval_requests(name: str) -> dict[int, list[tuple]]:
    """lm-eval's own requests for every document: (context, continuation) pairs or (context, gen_kwargs)."""
    leaf = task_manager().load([name])["tasks"][name]
    leaf.set_fewshot_seed(1234)  # as lm-eval's CLI seeds it by default (llmgen's --fewshot-seed default)
    leaf.build_all_requests(rank=0, world_size=1)
    out: dict[int, list[tuple]] = {}
    for inst in leaf.instances:
        out.setdefault(inst.doc_id, []).append(tuple(inst.arguments))
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_format_zero_is_lm_evals_requests_and_three_formats_differ(families, name):
    cfg = EvalConfig(model="/nonexistent/model", tasks=[f"lmeval:{name}"], cache=None)
    native, original = format_task(get_task(f"lmeval:{name}"), cfg)
    expected = lm_eval_requests(name)
    assert sorted(expected) == list(range(len(native.docs)))
    formats = sample_formats(prompt_structure(native).layout, 3, seed=0, original=original)
    assert len(formats) == 3 and formats[0] == original
    k = native.num_fewshot
    for i, doc in enumerate(native.docs):
        demos = native.demonstrations(doc, k, i)
        texts = [prompt_in(native, f, demos, doc) for f in formats]
        inputs = inputs_in(native, original, demos, doc)
        if inputs is not None:  # Winogrande: one context per option, the same continuation
            assert [p for t in inputs for p in choice_pairs(t, [doc["target"]])] == expected[i], (name, i)
        elif native.output_type == "multiple_choice":
            assert choice_pairs(texts[0], answers_in(native, original, doc)) == expected[i], (name, i)
        else:
            assert [generation_prompt(texts[0])] == [a[0] for a in expected[i]], (name, i)
        assert len(set(texts)) == 3, (name, texts)
    if k:  # the demonstrations are lm-eval's and are answered in the same format
        assert expected[0][0][0].count(native.prompt.fewshot_delimiter) >= k


def test_letter_answers_follow_the_numbering(families):
    # MMLU's continuations are the option letters: in a format numbering the options i, ii, ... the
    # answers (and the demonstrations' answers) are i, ii, ...
    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:t_mmlu"], cache=None)
    native, original = format_task(get_task("lmeval:t_mmlu"), cfg)
    assert native.prompt.answer_key == "options" and answers_in(native, original, native.docs[0]) == ["A", "B", "C", "D"]
    roman = original.replace({"options.numbering": "i", "options.wrapper": "(x)"})
    doc = native.docs[0]
    assert answers_in(native, roman, doc) == ["i", "ii", "iii", "iv"]
    text = prompt_in(native, roman, native.demonstrations(doc, 2, 0), doc)
    # demonstration 1 (dev row 0, the hyoid bone) is answered "D" in lm-eval's format, "iv" here; its
    # options are (i)..(iv)
    assert "\n(i) The first pharyngeal arch\n(ii) " in text and "\nAnswer: iv\n\n" in text
    assert gold_in(native, roman, doc) == "i"  # test row 0 (the facial nerve lesion): option 1


def test_python_doc_to_text_is_read_by_alignment(families):
    # medmcqa's doc_to_text is a Python function: its 'Choices:' line stays fixed text, the options
    # (four separate fields) form an enumeration, and the letters follow the numbering
    from llmgen.prompts.formats import Enumeration, Field, Text

    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:t_medmcqa"], cache=None)
    native, _ = format_task(get_task("lmeval:t_medmcqa"), cfg)
    layout = prompt_structure(native).layout
    assert layout.fields == (Field("Question", "question"), Text("Choices:"), Enumeration("options"))
    assert layout.output == "Answer" and native.prompt.answer_key == "options"


def test_option_lists_of_different_lengths_share_one_enumeration(families):
    # MMLU-Pro's real rows list 8, 10 and 9 options: one enumeration holds each document's whole
    # list; a format varies its wrapper and separator, the letters stay (its metric reads them)
    from llmgen.prompts.formats import Enumeration, Field, Text

    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:t_mmlu_pro"], cache=None)
    native, original = format_task(get_task("lmeval:t_mmlu_pro"), cfg)
    layout = prompt_structure(native).layout
    # "Question:\n" has another separator than the output's "Answer: ": it stays fixed text
    assert layout.fields == (Field("", "question", prefix="Question:\n"), Text("Options:"),
                             Enumeration("options", sizes=(10, 9, 8)))
    assert [len(d["options"]) for d in native.docs] == [8, 10, 9]
    paren = original.replace({"options.wrapper": "(x)", "options.separator": " "})
    text = prompt_in(native, paren, [], native.docs[1])
    assert "\n(A) CO2 released by the light-dependent reactions" in text and "\n(J) " in text and "\n(K) " not in text
    assert "options.numbering" in layout.fixed


def test_value_with_a_per_document_change_is_its_rendered_span(families):
    # MNLI appends "." to a hypothesis without one: the hypothesis value is the text lm-eval renders
    # ("... the team." either way), and " True, False or Neither?" is the field's fixed suffix
    from llmgen.prompts.formats import Field

    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:t_mnli"], cache=None)
    native, original = format_task(get_task("lmeval:t_mnli"), cfg)
    fields = prompt_structure(native).layout.fields
    assert [type(e) for e in fields] == [Field, Field] and fields[1].suffix == " True, False or Neither?"
    rows = [json.loads(x) for x in (ROWS / "mnli.jsonl").read_text().splitlines()]
    hyps = [d[fields[1].key] for d in native.docs]
    for row, hyp in zip(rows, hyps, strict=True):
        assert hyp == row["hypothesis"].strip() + ("" if row["hypothesis"].strip().endswith(".") else ".")
    assert {r["hypothesis"].strip().endswith(".") for r in rows} == {True, False}  # both cases occur


def test_unreadable_task_refused_naming_the_block(families):
    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:t_copa"], cache=None)
    with pytest.raises(LlmgenError) as e:
        run_format_eval(cfg, num_formats=3)
    msg = str(e.value)
    assert msg.startswith("--formats cannot vary lm-eval task 't_copa': ") and "\n" not in msg
    # COPA's validation rows ask for effects: "The man turned on the faucet therefore" shows no value whole
    assert msg.endswith("none of its document's values appears in its prompt")


@pytest.mark.parametrize("name", ["t_mmlu", "t_truthfulqa_mc2", "t_winogrande", "t_mnli", "t_mmlu_pro"])
def test_cli_formats_run_scores_format_zero_as_the_plain_lmeval_run(families, tiny_model_dir, tmp_path, name):
    # `llmgen eval --tasks lmeval:NAME --formats 3` (HF backend, tiny model, 2 documents): format 0's
    # metrics are the plain `lmeval:` run's (lm-eval's own evaluator), e.g. mc2's probability mass
    from llmgen.cli.main import main

    common = ["eval", "--model", tiny_model_dir, "--backend", "hf", "--tasks", f"lmeval:{name}", "--limit", "2",
              "--include-path", str(families), "--no-cache"]
    main([*common, "--output-dir", str(tmp_path / "plain")])  # an error would exit with status 2
    main([*common, "--formats", "3", "--output-dir", str(tmp_path / "formats")])
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())["results"][f"lmeval:{name}"]
    out = json.loads((tmp_path / "formats" / "results.json").read_text())
    assert out["results"][f"lmeval:{name}"] == pytest.approx(plain)
    entry = out["format_spread"][f"lmeval:{name}"]
    assert [f["format_id"] for f in entry["formats"]] == [0, 1, 2] and len(set(entry["example_prompts"])) == 3
