"""Format spread on lm-eval tasks: ``llmgen eval --tasks lmeval:NAME --formats K``.

An lm-eval task whose ``doc_to_text`` is ``Descriptor: {{field}}`` lines becomes a field layout; its
format 0 must score exactly the (context, continuation) pairs of lm-eval's own run of the task, which
is checked here against lm-eval's logged request arguments (lm-eval builds them, not llmgen).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.errors import LlmgenError  # noqa: E402
from llmgen.evaluate import EvalConfig, open_cache  # noqa: E402
from llmgen.prompts.format_eval import run_format_eval  # noqa: E402
from llmgen.prompts.formats import Field, Format, Layout  # noqa: E402
from llmgen.tasks.lmeval import INCLUDE_ENV, make_lm, run_lmeval, template_layout  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"
CAPITALS = EXAMPLES / "data" / "capitals.jsonl"

# Templates that cannot be varied, each in its own YAML next to the examples (one include folder more).
UNVARIABLE = {
    "fmt_jinja_if": ("{% if country %}Country: {{country}}{% endif %}\nCapital:", "Jinja control flow"),
    "fmt_filter": ("Country: {{country | upper}}\nCapital:", "Jinja expressions other than"),
    "fmt_sentence": ("The capital of {{country}} is", "is not 'Descriptor: {{field}}'"),
}


@pytest.fixture
def lmeval_env(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    extra = tmp_path / "tasks"
    extra.mkdir()
    for name, (text, _) in UNVARIABLE.items():
        (extra / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ntest_split: train\ndataset_kwargs:\n  data_files: {CAPITALS}\n"
            f"output_type: multiple_choice\ndoc_to_text: {json.dumps(text)}\ndoc_to_choice: '{{{{options}}}}'\n"
            "doc_to_target: label\nmetadata:\n  version: 1.0\n")
    monkeypatch.setenv(INCLUDE_ENV, os.pathsep.join([str(EXAMPLES), str(extra)]))


def test_template_layout_hand_cases():
    layout, fmt = template_layout("Question: {{question}}\nAnswer:")
    assert layout == Layout(fields=(Field("Question", "question"),), output="Answer") and fmt == Format()
    layout, fmt = template_layout("Premise: {{ premise }}\n\nHypothesis: {{hypothesis}}\n\nLabel:")
    assert [f.key for f in layout.fields] == ["premise", "hypothesis"] and layout.output == "Label"
    assert fmt == Format(space="\n\n")
    assert fmt.render(layout, {"premise": "p", "hypothesis": "h"}) == "Premise: p\n\nHypothesis: h\n\nLabel: "
    for text, why in [("Q: {{q}}\nA: {{a}}\n\nAnswer:", "mix separators or spacings"),
                      ("Question: {{question}}", "does not end at an output field"),
                      ("Question:{{question}}\nAnswer: ", "does not use the fields' separator"),
                      ("no fields\nAnswer:", "no 'Descriptor: {{field}}' line")]:
        with pytest.raises(LlmgenError, match=why.replace("{", r"\{").replace("}", r"\}")):
            template_layout(text)


@pytest.mark.parametrize("task,why", [
    *((name, why) for name, (_, why) in UNVARIABLE.items()),
    ("llmgen_capitals_mc", "is not 'Descriptor: {{field}}'"),
    ("llmgen_arith_gen", "it is generate_until"),
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
                     ["llmgen_capitals_fields"], num_fewshot=shots, seed=seed)
    lm_pairs = {s["doc_id"]: [tuple(a) for a in s["arguments"]] for s in ref["samples"]["llmgen_capitals_fields"]}
    assert lm_pairs[0][0][0].count("\nCapital: ") == shots
    cfg = EvalConfig(model=tiny_model_dir, tasks=["lmeval:llmgen_capitals_fields"], num_fewshot=shots, seed=seed,
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


def test_formats_use_run_evals_seeded_demonstrations():
    # a random few-shot sampler seeds per doc_id: --formats' format 0 must draw what plain eval draws
    from llmgen.evaluate import task_prompt
    from llmgen.prompts.format_eval import task_evaluator
    from llmgen.tasks import Task

    docs = [{"question": f"q{i}", "target": f"a{i}"} for i in range(6)]
    task = Task(name="t", docs=docs, fewshot_docs=docs, num_fewshot=2, fewshot_sampler="random")
    cfg = EvalConfig(model="x", tasks=[], cache=None)
    ev = task_evaluator(None, task, cfg, None, [Format()])
    texts = [ev.request(0, i).text.rstrip() for i in range(len(docs))]  # the scored context is rstripped
    assert texts == [task_prompt(None, task, d, i, cfg).rstrip() for i, d in enumerate(docs)]
    assert len({t.split("\n\n")[0] for t in texts}) > 1  # the demonstrations really vary by document
