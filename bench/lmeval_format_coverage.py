"""Which popular lm-eval 0.4.13 tasks ``llmgen eval --tasks lmeval:NAME --formats 3`` can vary.

For each of 47 popular tasks (the list below), one of:

- ``rows``: lm-eval's own config on local rows in the hub schema (tests/fixtures/lmeval_rows):
  ``format_task`` reads the structure, checks format 0 against lm-eval's own ``fewshot_context`` for
  every document, and 3 sampled formats must render 3 different prompts. This is the whole
  ``--formats`` preparation, short of the model calls.
- ``config``: no local rows; the task's Jinja ``doc_to_text`` (no control flow) is read as a layout
  from the config alone and the config passes the same conversion checks (output type, gen_prefix,
  generation metrics); format 0's byte-for-byte check needs rows and is not run.
- ``refused``: the one-line reason ``--formats`` gives (or would give: Python ``doc_to_text``
  without rows is reported as ``needs rows``).

Run: ``python bench/lmeval_format_coverage.py`` (about a minute on CPU; no model, no network).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from llmgen.errors import LlmgenError
from llmgen.evaluate import EvalConfig
from llmgen.prompts.formats import sample_formats
from llmgen.prompts.render import prompt_in, prompt_structure
from llmgen.prompts.structure import jinja_skeleton, structure_of
from llmgen.tasks import get_task
from llmgen.tasks.lmeval import INCLUDE_ENV, format_task, local_task_yaml, task_manager

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "tests" / "fixtures" / "lmeval_rows"

POPULAR = """arc_easy arc_challenge piqa gsm8k gsm8k_cot mathqa hendrycks_math_algebra mmlu_anatomy wmdp_bio
hellaswag agieval_lsat_ar boolq rte cb anli_r1 multirc sst2 qnli truthfulqa_mc1 truthfulqa_mc2 truthfulqa_gen sciq
commonsense_qa gpqa_main_zeroshot wic mmlu_flan_n_shot_generative_anatomy triviaqa nq_open
bbh_fewshot_boolean_expressions bbh_cot_fewshot_boolean_expressions winogrande race copa logiqa logiqa2 pubmedqa
medmcqa openbookqa lambada_openai mnli qqp mrpc cola wnli wsc273 mmlu_pro_biology social_iqa""".split()

# task -> (its lm-eval YAML under lm_eval/tasks, {split: rows file}, extra YAML lines)
LOCAL = {
    "mmlu_anatomy": ("mmlu/default/mmlu_anatomy.yaml", {"test": "mmlu_test.jsonl", "dev": "mmlu_dev.jsonl"}, "tag: []\n"),
    "arc_easy": ("arc/arc_easy.yaml", {"train": "arc_easy.jsonl", "validation": "arc_easy.jsonl",
                                       "test": "arc_easy.jsonl"}, "tag: []\n"),
    "hellaswag": ("hellaswag/hellaswag.yaml", {"train": "hellaswag.jsonl", "validation": "hellaswag.jsonl"}, "tag: []\n"),
    "boolq": ("super_glue/boolq/default.yaml", {"train": "boolq.jsonl", "validation": "boolq.jsonl"}, "tag: []\n"),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", {"validation": "truthfulqa.jsonl"}, "tag: []\n"),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", {"validation": "truthfulqa.jsonl"}, "tag: []\n"),
    "truthfulqa_gen": ("truthfulqa/truthfulqa_gen.yaml", {"validation": "truthfulqa_gen.jsonl"}, "tag: []\n"),
    "commonsense_qa": ("commonsense_qa/default.yaml", {"train": "commonsense_qa.jsonl",
                                                       "validation": "commonsense_qa.jsonl"}, ""),
    "triviaqa": ("triviaqa/default.yaml", {"train": "triviaqa.jsonl", "validation": "triviaqa.jsonl"}, ""),
    "bbh_fewshot_boolean_expressions": ("bbh/fewshot/boolean_expressions.yaml",
                                        {"test": "bbh_boolean_expressions.jsonl"}, "tag: []\n"),
    "bbh_cot_fewshot_boolean_expressions": ("bbh/cot_fewshot/boolean_expressions.yaml",
                                            {"test": "bbh_boolean_expressions.jsonl"}, "tag: []\n"),
    "logiqa2": ("logiqa2/logiqa2.yaml", {"train": "logiqa2.jsonl", "validation": "logiqa2.jsonl",
                                         "test": "logiqa2.jsonl"}, ""),
    "wsc273": ("wsc273/default.yaml", {"test": "wsc273.jsonl"}, ""),
    # no public repository holds MMLU-Pro's validation (few-shot) rows: zero-shot on real test rows
    "mmlu_pro_biology": ("mmlu_pro/mmlu_pro_biology.yaml", {"test": "mmlu_pro_test.jsonl"},
                         "tag: []\nnum_fewshot: 0\nfewshot_split: null\n"),
    "winogrande": ("winogrande/default.yaml", {"train": "winogrande.jsonl", "validation": "winogrande.jsonl"}, ""),
    "copa": ("super_glue/copa/default.yaml", {"train": "copa.jsonl", "validation": "copa.jsonl"}, "tag: []\n"),
    "medmcqa": ("medmcqa/medmcqa.yaml", {"train": "medmcqa.jsonl", "validation": "medmcqa.jsonl"}, ""),
    "logiqa": ("logiqa/logiqa.yaml", {"train": "logiqa.jsonl", "validation": "logiqa.jsonl", "test": "logiqa.jsonl"}, ""),
    "pubmedqa": ("pubmedqa/pubmedqa.yaml", {"train": "pubmedqa.jsonl", "validation": "pubmedqa.jsonl",
                                            "test": "pubmedqa.jsonl"}, ""),
    "openbookqa": ("openbookqa/openbookqa.yaml", {"train": "openbookqa.jsonl", "validation": "openbookqa.jsonl",
                                                  "test": "openbookqa.jsonl"}, ""),
    "mnli": ("glue/mnli/default.yaml", {"train": "mnli.jsonl", "validation_matched": "mnli.jsonl"}, "tag: []\n"),
}


def with_rows(name: str, folder: Path) -> str:
    """``rows``: the whole --formats preparation on local rows, or the refusal."""
    cfg = EvalConfig(model="/nonexistent/model", tasks=[f"lmeval:local_{name}"], cache=None)
    try:
        native, original = format_task(get_task(f"lmeval:local_{name}"), cfg)
    except LlmgenError as e:
        return f"refused: {e}"
    formats = sample_formats(prompt_structure(native).layout, 3, seed=0, original=original)
    doc = native.docs[0]
    texts = {prompt_in(native, f, native.demonstrations(doc, native.num_fewshot, 0), doc) for f in formats}
    return "rows" if len(texts) == 3 else f"refused: {len(texts)} distinct formats"


def from_config(name: str) -> str:
    """``config``: the layout read from the Jinja template, the conversion checks on the config."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(task_manager()._entry(name).yaml_path)
    text, kind = cfg.get("doc_to_text"), cfg.get("output_type", "generate_until")
    if kind not in ("multiple_choice", "generate_until"):
        return f"refused: it is {kind}"
    if not isinstance(text, str) or "{%" in text or "{{" not in text:
        return "needs rows: its doc_to_text is Python or Jinja control flow"
    if cfg.get("gen_prefix"):
        return "refused: it has a gen_prefix"
    try:
        delim = cfg.get("target_delimiter", " ")
        fmt = cfg.get("fewshot_config") or {}
        if cfg.get("num_fewshot") and "target_delimiter" in fmt and fmt["target_delimiter"] != delim:
            return "refused: its few-shot target_delimiter differs"
        st = structure_of(jinja_skeleton(text), delim)
    except LlmgenError as e:
        return f"refused: {e}"
    return "config" if len(sample_formats(st.layout, 3, seed=0, original=st.original)) == 3 else "refused: <3 formats"


def main() -> None:
    logging.disable(logging.WARNING)
    catalogue = Path(__import__("lm_eval").__file__).parent / "tasks"
    with tempfile.TemporaryDirectory() as tmp:
        for name, (yaml, splits, extra) in LOCAL.items():
            files = {k: str(ROWS / v) for k, v in splits.items()}
            Path(tmp, f"local_{name}.yaml").write_text(local_task_yaml(f"local_{name}", catalogue / yaml, files, extra))
        os.environ[INCLUDE_ENV] = tmp
        results = {n: with_rows(n, Path(tmp)) if n in LOCAL else from_config(n) for n in POPULAR}
    ok = [n for n, r in results.items() if r in ("rows", "config")]
    for n, r in results.items():
        print(f"| {n} | {r} |")
    rows = sum(r == "rows" for r in results.values())
    print(f"\n{len(ok)}/{len(POPULAR)} vary with --formats 3 ({100 * len(ok) / len(POPULAR):.0f}%): "
          f"{rows} checked on local rows, {len(ok) - rows} from the config alone", file=sys.stderr)


if __name__ == "__main__":
    main()
