"""Format spread on lm-eval tasks: ``llmgen eval --tasks lmeval:NAME --formats K``.

An lm-eval task whose ``doc_to_text`` is ``Descriptor<separator>{{field}}`` parts becomes a field
layout; its format 0 must send exactly the requests of lm-eval's own run of the task (multiple choice:
the (context, continuation) pairs; generate_until: the context), which is checked here against
lm-eval's logged request arguments (lm-eval builds them, not llmgen), and a generate_until task is
scored by the task's own filters and metric code, checked against hand values and the plain run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.errors import LlmgenError  # noqa: E402
from llmgen.evaluate import EvalConfig, open_cache, run_eval  # noqa: E402
from llmgen.prompts.format_eval import run_format_eval  # noqa: E402
from llmgen.prompts.formats import Field, Format, Layout  # noqa: E402
from llmgen.tasks.lmeval import INCLUDE_ENV, convert_results, make_lm, run_lmeval, template_layout  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"
CAPITALS = EXAMPLES / "data" / "capitals.jsonl"

# Templates that cannot be varied, each in its own YAML next to the examples (one include folder more).
UNVARIABLE = {
    "fmt_sentence": ("The capital of {{country}} is", "is neither a descriptor with a separator nor an option label"),
    "fmt_spaces_only": ("Country {{country}}\nCapital:", "is neither a descriptor with a separator nor an option label"),
    "fmt_inline": ("Country: {{country}} Options: {{options|join(', ')}}\nCapital:", "share a line"),
    # the text outside the fields depends on the document
    "fmt_differs": ("{% if label == 1 %}Land{% else %}Country{% endif %}: {{country}}\nCapital:",
                    "differ between documents outside their fields"),
}
# Templates the old 'Descriptor: {{field}}' reader refused that are now read: Jinja control flow
# (aligned with the rendered prompts), a filter, fixed text after a field, an enumeration.
VARIABLE = {
    "fmt_jinja_if": "{% if country %}Country: {{country}}{% endif %}\nCapital:",
    "fmt_filter": "Country: {{country | upper}}?\nCapital:",
    # the field's separator ends with a newline, the output's with the target_delimiter ' ': the
    # field keeps 'Country:\n' as fixed text
    "fmt_newline_sep": "Country:\n{{country}}\nCapital:",
    "fmt_enum": "Where is the capital?\nCountry: {{country}}\n(a) {{options[0]}}\n(b) {{options[1]}}\n(c) {{options[2]}}\nCapital:",
}
# Multiple-byte choices: characters and UTF-8 bytes disagree (lm-eval's acc_norm divides by characters).
CAFE = [{"word": "coffee house", "options": ["café", "cafe!"], "label": 1},
        {"word": "not worldly", "options": ["naïve", "naive"], "label": 0},
        {"word": "Japan", "options": ["日本", "Nihon"], "label": 0},
        {"word": "over", "options": ["über", "uber"], "label": 0}]


@pytest.fixture
def lmeval_env(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    extra = tmp_path / "tasks"
    extra.mkdir()
    cafe = tmp_path / "cafe.jsonl"
    cafe.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CAFE), encoding="utf-8")
    for name, (text, data) in {**{n: (t, CAPITALS) for n, (t, _) in UNVARIABLE.items()},
                               **{n: (t, CAPITALS) for n, t in VARIABLE.items()},
                               "fmt_cafe": ("Word: {{word}}\nAnswer:", cafe)}.items():
        (extra / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ntest_split: train\ndataset_kwargs:\n  data_files: {data}\n"
            f"output_type: multiple_choice\ndoc_to_text: {json.dumps(text)}\ndoc_to_choice: '{{{{options}}}}'\n"
            "doc_to_target: label\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n  - metric: acc_bytes\n"
            "metadata:\n  version: 1.0\n")
    monkeypatch.setenv(INCLUDE_ENV, os.pathsep.join([str(EXAMPLES), str(extra)]))


def test_template_layout_hand_cases():
    layout, fmt = template_layout("Question: {{question}}\nAnswer:")
    assert layout == Layout(fields=(Field("Question", "question"),), output="Answer") and fmt == Format()
    layout, fmt = template_layout("Premise: {{ premise }}\n\nHypothesis: {{hypothesis}}\n\nLabel:")
    assert [f.key for f in layout.fields] == ["premise", "hypothesis"] and layout.output == "Label"
    assert fmt == Format(space="\n\n")
    assert fmt.render(layout, {"premise": "p", "hypothesis": "h"}) == "Premise: p\n\nHypothesis: h\n\nLabel: "
    # the separators of the FormatSpread grammar, any casing of the descriptors; the answer follows
    # the target_delimiter (the separator's trailing whitespace)
    for text, delim, descs, output, fmt, rendered in [
        ("Question - {{q}}\nAnswer -", " ", ["Question"], "Answer", Format(separator=" - "), "Question - v\nAnswer - "),
        ("Q:: {{q}}\nA::", " ", ["Q"], "A", Format(separator=":: "), "Q:: v\nA:: "),
        ("Question:\n{{q}}\nAnswer:", "\n", ["Question"], "Answer", Format(separator=":\n"), "Question:\nv\nAnswer:\n"),
        ("QUESTION: {{q}}\nANSWER:", " ", ["QUESTION"], "ANSWER", Format(), "QUESTION: v\nANSWER: "),
        ("### Instruction:\n{{q}}\n\n### Response:", "\n", ["### Instruction"], "### Response",
         Format(separator=":\n", space="\n\n"), "### Instruction:\nv\n\n### Response:\n"),
        # a descriptor-less field, fixed text after a field, a longer break keeps its extra newline
        ("{{q}}\n\nQuestion: {{q}}?\nAnswer:", " ", ["", "Question"], "Answer", Format(),
         "v\n\nQuestion: v?\nAnswer: "),
        ("{{q}}", " ", [""], "", Format(space=" "), "v "),
    ]:
        layout, got = template_layout(text, delim)
        assert [f.descriptor for f in layout.fields] == descs and layout.output == output and got == fmt, text
        assert got.render(layout, {"q": "v"}) == rendered and rendered == text.replace("{{q}}", "v") + delim
    # the original casing is kept; the other casings of the grammar recase it
    layout, fmt = template_layout("QUESTION: {{q}}\nANSWER:")
    assert fmt.replace({"casing": "title"}).render(layout, {"q": "v"}) == "Question: v\nAnswer: "
    # MMLU's enumeration: 'A. ' labels, its own wrapper, numbering, separator and item spacing
    layout, fmt = template_layout("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nAnswer:")
    enum = layout.enumeration("options")
    assert fmt.to_dict() == {"options.wrapper": "x.", "options.numbering": "A", "options.separator": " ",
                             "options.item_space": "\n"}
    values = {"question_strip": "Q", "options": ["x", "y"]}
    assert fmt.render(layout, values) == "Q\nA. x\nB. y\nAnswer: "
    other = fmt.replace({"options.wrapper": "(x)", "options.numbering": "i"})
    assert other.render(layout, values) == "Q\n(i) x\n(ii) y\nAnswer: " and other.option_label(1, enum) == "ii"
    # a field written with another separator than the output's keeps its head as fixed text; values
    # joined by a space on one line are one value; fixed text after the output's separator
    layout, fmt = template_layout("Q: {{q}}\nA - {{a}} {{b}}\nAnswer:")
    assert layout.fields == (Field("Q", "q"), Field("", "a__b", prefix="A - ")) and fmt == Format()
    assert fmt.replace({"separator": " || "}).render(layout, {"q": "1", "a__b": "2 3"}) == "Q || 1\nA - 2 3\nAnswer || "
    layout, fmt = template_layout("Q: {{q}}\nA: Let's think step by step.")
    assert layout.output == "A" and layout.output_text == "Let's think step by step. "
    assert fmt.render(layout, {"q": "1"}, "2") == "Q: 1\nA: Let's think step by step. 2"
    with pytest.raises(LlmgenError, match="its fields mix separators"):  # no output field to decide
        template_layout("Q: {{q}}\nA - {{a}}", "\n")
    for text, why in [
                      ("Question: {{q}}\nAnswer", "does not end at an output field"),
                      ("Question: {{q}}\nAnswer: ", "does not end at an output field"),
                      ("Question {{q}}\nAnswer:", "is neither a descriptor"),
                      ("Question = {{q}}\nAnswer:", "is neither a descriptor"),
                      ("{{a}}, {{b}}\nAnswer:", "share a line"),
                      ("{{a}}\n{{b}}\n{{c}}", "answer follows the prompt's last value"),
                      ("Q: {{q}}\n\nP: {{p}}\n\tA:", "different spacings")]:
        with pytest.raises(LlmgenError, match=why):
            template_layout(text, "" if "{{c}}" in text else " ")


@pytest.mark.parametrize("task,why", [
    *((name, why) for name, (_, why) in UNVARIABLE.items()),
    ("llmgen_capitals_mc", "is neither a descriptor"),
    ("llmgen_paragraphs_ppl", "it is loglikelihood_rolling"),
    ("llmgen_demo", "it is a group"),
])
def test_unvariable_tasks_refused_in_one_line_before_loading(lmeval_env, task, why):
    # the model path does not exist: the refusal has to come before any model loads
    cfg = EvalConfig(model="/nonexistent/model", tasks=[f"lmeval:{task}"], cache=None)
    with pytest.raises(LlmgenError) as e:
        run_format_eval(cfg, num_formats=3)
    msg = str(e.value)
    assert msg.startswith(f"--formats cannot vary lm-eval task {task!r}: ") and why in msg and "\n" not in msg


def test_chat_template_refused(lmeval_env):
    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:llmgen_capitals_fields"], apply_chat_template=True,
                     cache=None)
    with pytest.raises(LlmgenError, match="--apply-chat-template is not supported"):
        run_format_eval(cfg, num_formats=3)


@pytest.mark.parametrize("shots,seed", [(2, 3)])
def test_format_zero_fewshot_is_lm_evals_sampled_context(lmeval_env, tiny_hf, tiny_model_dir, shots, seed):
    # lm-eval's seeded sampler draws each document's demonstrations; format 0 must hold the same ones
    ref = run_lmeval(make_lm(tiny_hf, open_cache(EvalConfig(model=tiny_model_dir, tasks=[], cache=None))),
                     ["llmgen_capitals_fields"], num_fewshot=shots, fewshot_seed=seed)
    lm_pairs = {s["doc_id"]: [tuple(a) for a in s["arguments"]] for s in ref["samples"]["llmgen_capitals_fields"]}
    assert lm_pairs[0][0][0].count("\nCapital: ") == shots
    cfg = EvalConfig(model=tiny_model_dir, tasks=["lmeval:llmgen_capitals_fields"], num_fewshot=shots, fewshot_seed=seed,
                     cache=None)
    out = run_format_eval(cfg, num_formats=2, backend=tiny_hf, show_progress=False)
    ours = {r["doc_id"]: [(r["prompt"], c) for c in r["continuations"]] for r in out["samples"]}
    assert ours == lm_pairs
    assert out["results"]["lmeval:llmgen_capitals_fields"]["acc"] == pytest.approx(
        ref["results"]["llmgen_capitals_fields"]["acc,none"])


def test_format_zero_scores_lm_evals_requests(lmeval_env, tiny_hf, tiny_model_dir, tmp_path):
    ref = run_lmeval(make_lm(tiny_hf, open_cache(EvalConfig(model=tiny_model_dir, tasks=[], cache=None))),
                     ["llmgen_capitals_fields"])
    lm_pairs = {s["doc_id"]: [tuple(a) for a in s["arguments"]] for s in ref["samples"]["llmgen_capitals_fields"]}
    assert len(lm_pairs) == 8 and lm_pairs[0][0] == ("Name the capital city of the country.\n\nCountry: France\nCapital:",
                                                     " Berlin")
    run = tmp_path / "run"
    cfg = EvalConfig(model=tiny_model_dir, tasks=["lmeval:llmgen_capitals_fields"], cache=None, output_dir=str(run))
    out = run_format_eval(cfg, num_formats=4, backend=tiny_hf, show_progress=False)
    rows = [json.loads(x) for x in (run / "format_samples.jsonl").read_text().splitlines()]
    ours = {r["doc_id"]: [(r["prompt"], c) for c in r["continuations"]] for r in rows if r["format_id"] == 0}
    assert ours == lm_pairs
    # the other formats really differ from lm-eval's prompt
    others = {r["prompt"] for r in rows if r["format_id"] != 0 and r["doc_id"] == 0}
    assert len(others) == 3 and lm_pairs[0][0][0] not in others
    # the --formats schema: original/min/median/max/spread, intervals on the original format
    entry = out["format_spread"]["lmeval:llmgen_capitals_fields"]
    s = entry["summary"]["acc"]
    accs = [f["metrics"]["acc"] for f in entry["formats"]]
    assert s["original"] == accs[0] and s["min"] == min(accs) and s["max"] == max(accs)
    assert s["spread"] == pytest.approx(max(accs) - min(accs)) and s["formats"] == 4
    u = out["uncertainty"]["lmeval:llmgen_capitals_fields"]["acc"]
    assert u["ci_low"] <= s["original"] <= u["ci_high"]
    assert out["n_samples"]["lmeval:llmgen_capitals_fields"] == 8
    # the same model and requests: format 0's accuracy is lm-eval's
    assert s["original"] == pytest.approx(ref["results"]["llmgen_capitals_fields"]["acc,none"])
    saved = json.loads((run / "results.json").read_text())
    assert saved["results"]["lmeval:llmgen_capitals_fields"]["acc"] == s["original"]


def test_formats_use_run_evals_seeded_demonstrations(tiny_hf):
    # a random few-shot sampler seeds per doc_id: --formats' format 0 must draw what plain eval draws
    from llmgen.evaluate import task_prompt
    from llmgen.prompts.format_eval import task_evaluator
    from llmgen.tasks import Task

    docs = [{"question": f"q{i}", "target": f"a{i}"} for i in range(6)]
    task = Task(name="t", docs=docs, fewshot_docs=docs, num_fewshot=2, fewshot_sampler="random")
    cfg = EvalConfig(model="x", tasks=[], cache=None)
    ev = task_evaluator(tiny_hf, task, cfg, None, [Format()])
    texts = [ev.request(0, i).text.rstrip() for i in range(len(docs))]  # the scored context is rstripped
    assert texts == [task_prompt(tiny_hf, task, d, i, cfg).rstrip() for i, d in enumerate(docs)]
    assert len({t.split("\n\n")[0] for t in texts}) > 1  # the demonstrations really vary by document


# --- generate_until ------------------------------------------------------------------------------

@pytest.mark.parametrize("task,shots,seed", [("llmgen_gsm8k_style", 2, 3), ("llmgen_arith_gen", 3, 0)])
def test_generate_until_format_zero_is_lm_evals_context(lmeval_env, tiny_hf, tiny_model_dir, tmp_path, task, shots,
                                                        seed):
    # lm-eval builds the contexts (description, its seeded demonstrations + fewshot_delimiter, the
    # document) and generates with the task's until/max_gen_toks; format 0 must send the same strings
    # and get the same texts back
    from llmgen.tasks.lmeval import task_manager

    ref = run_lmeval(make_lm(tiny_hf, open_cache(EvalConfig(model=tiny_model_dir, tasks=[], cache=None))), [task],
                     num_fewshot=shots, fewshot_seed=seed)
    samples = {s["doc_id"]: s for s in ref["samples"][task]}
    leaf = task_manager().load([task])["tasks"][task]
    assert samples[0]["arguments"][0][1]["until"] == leaf.config.generation_kwargs["until"]
    assert samples[0]["arguments"][0][0].count("\nAnswer: ") == shots  # the demonstrations, answered
    cfg = EvalConfig(model=tiny_model_dir, tasks=[f"lmeval:{task}"], num_fewshot=shots, fewshot_seed=seed, cache=None,
                     output_dir=str(tmp_path / "run"))
    out = run_format_eval(cfg, num_formats=3, backend=tiny_hf, show_progress=False)
    assert {r["doc_id"]: r["prompt"] for r in out["samples"]} == {i: s["arguments"][0][0] for i, s in samples.items()}
    assert {r["doc_id"]: r["responses"] for r in out["samples"]} == {i: s["resps"][0] for i, s in samples.items()}
    # the task's metrics under the names of a plain `lmeval:` run, equal to lm-eval's
    expected = convert_results(task, {"results": {task: ref["results"][task]}})
    assert out["results"][f"lmeval:{task}"] == pytest.approx(expected)
    # the other formats differ from lm-eval's prompt and spell the demonstrations in their own format
    entry = out["format_spread"][f"lmeval:{task}"]
    assert set(entry["summary"]) == set(expected) and all(s["formats"] == 3 for s in entry["summary"].values())
    rows = [json.loads(x) for x in (tmp_path / "run" / "format_samples.jsonl").read_text().splitlines()]
    for f in entry["formats"][1:]:
        prompt = next(r["prompt"] for r in rows if r["format_id"] == f["format_id"] and r["doc_id"] == 0)
        answer = f["format"].split("{}")[-2]  # what precedes the answer in this format, e.g. "\nANSWER - "
        assert prompt != samples[0]["arguments"][0][0] and prompt.endswith(answer.rstrip())
        assert prompt.count(answer.rstrip()) == shots + 1, (f["format"], prompt)
        # each format's stops: lm-eval's until (format 0's, EOS text added) plus its own spelling of
        # the descriptor the next question starts with; the backend got them (no response holds one)
        assert f["stop"][:len(entry["formats"][0]["stop"])] == entry["formats"][0]["stop"]
        own = [s for s in f["stop"] if s not in entry["formats"][0]["stop"]]
        assert all(("\n" + prompt).count(s) == shots + 1 for s in own), (f["format"], own)
        assert not any(s in resp for r in rows if r["format_id"] == f["format_id"] for resp in r["responses"]
                       for s in f["stop"])
    assert entry["formats"][0]["stop"][:len(leaf.config.generation_kwargs["until"])] == leaf.config.generation_kwargs["until"]


def test_generate_until_scored_by_the_tasks_own_filters_and_metric(lmeval_env):
    # gsm8k's definition: strict-match takes "#### N", flexible-extract the last number; exact_match
    # ignores case, ",", "$", everything up to "#### " and a final "." (hand-computed below)
    from llmgen.tasks import get_task
    from llmgen.tasks.lmeval import format_task

    cfg = EvalConfig(model="/nonexistent/model", tasks=["lmeval:llmgen_gsm8k_style"], cache=None)
    native, original = format_task(get_task("lmeval:llmgen_gsm8k_style"), cfg)
    assert original == Format() and native.docs[0]["target"].endswith("#### 18")  # Janet's ducks: 18
    cases = [("She makes 9 * 2 = $18.\n#### 18", 1.0, 1.0),
             ("She makes 9 * 2 = $18 every day.", 0.0, 1.0),     # no "#### ": strict-match finds nothing
             ("#### 18\nThen 20 more.", 1.0, 0.0),               # the last number is 20
             ("She makes $1,8.\n#### 1,8", 1.0, 1.0),            # "," is ignored on both sides
             ("#### 16", 0.0, 0.0)]
    for text, strict, flexible in cases:
        correct, metrics = native.score_responses([text], 0)
        assert metrics == {"exact_match/strict-match": strict, "exact_match/flexible-extract": flexible}, text
        assert correct == [strict == 1.0]


def test_generate_until_original_format_equals_plain_lmeval_run(lmeval_env, hf_default, default_model_dir, tmp_path):
    # the embedded model answers "a + b = c" to some questions: the last-number filter credits them
    cache = str(tmp_path / "c.sqlite")
    plain = run_eval(EvalConfig(model=default_model_dir, tasks=["lmeval:llmgen_arith_gen"], cache=cache),
                     backend=hf_default, show_progress=False)
    cfg = EvalConfig(model=default_model_dir, tasks=["lmeval:llmgen_arith_gen"], cache=cache)
    out = run_format_eval(cfg, num_formats=3, backend=hf_default, show_progress=False)
    name = "lmeval:llmgen_arith_gen"
    assert plain["results"][name]["exact_match/get-last"] > 0
    assert out["results"][name] == plain["results"][name]
    ours = {r["doc_id"]: (r["prompt"], r["responses"], r["metrics"]) for r in out["samples"]}
    assert ours == {r["doc_id"]: (r["prompt"], r["responses"], r["metrics"]) for r in plain["samples"]
                    if r["task"] == name}
    s = out["format_spread"][name]["summary"]["exact_match/get-last"]
    u = out["uncertainty"][name]["exact_match/get-last"]
    assert s["original"] == plain["results"][name]["exact_match/get-last"] and s["min"] <= s["original"] <= s["max"]
    assert u["ci_low"] <= s["original"] <= u["ci_high"] and s["formats"] == 3


# --- acc_norm: characters, as lm-eval 0.4.13 ------------------------------------------------------

def test_acc_norm_divides_by_characters_as_lm_eval(lmeval_env, tiny_hf, tiny_model_dir, tmp_path):
    from llmgen.tasks import METRICS, Scored
    from llmgen.tasks.lmeval import task_manager

    leaf = task_manager().load(["fmt_cafe"])["tasks"]["fmt_cafe"]
    doc = list(leaf.eval_docs)[0]  # "café" (4 characters, 5 bytes) vs "cafe!" (5 characters, 5 bytes), gold 1
    lls = [-4.2, -5.0]
    # by hand: acc argmax(-4.2, -5.0) = 0; characters -4.2/4 = -1.05 < -5/5 = -1.0 -> 1;
    # bytes -4.2/5 = -0.84 > -1.0 -> 0
    want = {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 0.0}
    assert leaf.process_results(doc, [(lp, False) for lp in lls]) == want  # lm-eval's own code
    ours = Scored(choice_logprobs=lls, choices=["café", "cafe!"], gold_index=1)
    assert {m: METRICS.get(m).score(ours) for m in want} == want
    # --formats scores with the same rule: every row's acc/acc_norm is lm-eval's on the row's logprobs
    cfg = EvalConfig(model=tiny_model_dir, tasks=["lmeval:fmt_cafe"], cache=None, output_dir=str(tmp_path / "run"))
    run_format_eval(cfg, num_formats=3, backend=tiny_hf, show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "format_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(CAFE)
    docs = list(leaf.eval_docs)
    for r in rows:
        ref = leaf.process_results(docs[r["doc_id"]], [(lp, False) for lp in r["choice_logprobs"]])
        assert r["metrics"] == ref  # the task's own process_results: acc, acc_norm and acc_bytes
