"""``llmgen eval --formats K`` on tasks that enumerate their options and on SNI task files.

The answers of such a task are the options' numbers, which change with the format: option 2 is
"B" in the original format and "ii" in a format that numbers with lower roman numerals. The
FormatSpread recipe's request for (format, example) is the reference: ``--formats`` must send the
same prompt and the same answers, and format 0 must be what plain ``llmgen eval`` ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmgen.evaluate import EvalConfig, run_eval
from llmgen.prompts.format_eval import choice_pairs, run_format_eval
from llmgen.prompts.formats import sample_formats
from llmgen.prompts.render import answers_in, gold_in, prompt_in, prompt_structure
from llmgen.tasks import get_task

ROOT = Path(__file__).resolve().parents[3]
SNI = ROOT / "tests" / "fixtures" / "sni" / "task1419_mathqa_gain.json"


def test_enumerated_task_answers_follow_each_formats_numbering(tiny_hf, tiny_model_dir, tmp_path):
    task = get_task("topic")
    assert task.prompt.answer_key == "options"
    cfg = EvalConfig(model=tiny_model_dir, tasks=["topic"], limit=4, cache=None, output_dir=str(tmp_path / "run"))
    out = run_format_eval(cfg, num_formats=3, backend=tiny_hf, show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "format_samples.jsonl").read_text().splitlines()]
    formats = sample_formats(prompt_structure(task).layout, 3, seed=0, original=prompt_structure(task).original)
    docs = task.docs[:4]
    for arm, fmt in enumerate(formats):
        labels = answers_in(task, fmt)
        for r in (r for r in rows if r["format_id"] == arm):
            doc = docs[r["doc_id"]]
            demos = task.demonstrations(doc, task.num_fewshot, r["doc_id"])
            # the recipe's request: the same prompt, the answers are this format's option numbers
            expected = choice_pairs(prompt_in(task, fmt, demos, doc), labels)
            assert [(r["prompt"], c) for c in r["continuations"]] == expected
            assert r["target"] == gold_in(task, fmt, doc) == labels[doc["label"]]
    assert len({tuple(answers_in(task, f)) for f in formats}) > 1 or len({f.template(prompt_structure(task).layout)
                                                                              for f in formats}) == 3
    # format 0 is what plain `llmgen eval` ranks
    plain = run_eval(EvalConfig(model=tiny_model_dir, tasks=["topic"], limit=4, cache=None), backend=tiny_hf,
                     show_progress=False)
    assert out["results"]["topic"]["acc"] == plain["results"]["topic"]["acc"]
    assert [r["prompt"] for r in out["samples"]] == [r["prompt"] for r in plain["samples"]]


def test_sni_task_file_runs_with_formats(tiny_hf, tiny_model_dir):
    cfg = EvalConfig(model=tiny_model_dir, tasks=[str(SNI)], cache=None)
    out = run_format_eval(cfg, num_formats=3, backend=tiny_hf, show_progress=False)
    entry = out["format_spread"][SNI.stem]
    assert entry["summary"]["acc"]["formats"] == 3 and len(entry["formats"]) == 3
    prompts = set(entry["example_prompts"])
    assert len(prompts) == 3
    task = get_task(str(SNI))
    # format 0 writes the instance as the SNI file does (the reference's parse, read back)
    raw = prompt_in(task, prompt_structure(task).original, task.demonstrations(task.docs[0], task.num_fewshot, 0), task.docs[0])
    assert out["samples"][0]["prompt"] == raw.rstrip()
