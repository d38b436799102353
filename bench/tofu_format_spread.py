"""Reproduction driver (not a test): TOFU forget10 under format change, before and after NPO.

Issue 26 item 3: does a model that "forgot" in TOFU's own prompt still answer when the question is
spelled in another format? This driver measures the embedded SmolLM2-135M-Instruct (``--model
default``) on TOFU's real forget10 rows (``../shared/data/tofu``) in ``--formats`` question formats
(``llmgen.prompts.request_formats``: format 0 is TOFU's bare question, format 1 the grammar's
``Question: q`` newline ``Answer:``, the others sampled with seed 0), before and after unlearning
with the committed NPO config (``recipes/npo_unlearning/configs/cpu.yaml``: its ``finetune`` and
``train`` settings, method ``npo``), and writes per format the forget probability and ROUGE-L with
their 95% bootstrap intervals (over the forget questions, seed 0) to a JSON file.

The stages, each on the committed config's settings:

1. fine-tune SmolLM2 on forget10 (TOFU's ``full`` would add retain90; forget10 alone is what the
   forget-set figures need, and it is what fits this CPU): the model that knows the facts;
2. evaluate it in every format (the forget set's first ``--rows`` questions: cpu.yaml's
   ``eval.limit`` 8, generations up to its 64 tokens);
3. unlearn forget10 with NPO (``train``: lr 1e-5, 10 epochs, batch 8, linear decay, one warm-up epoch);
4. evaluate the unlearned model in the same formats.

Forget quality needs a retain-only model's logs and is not measured here. ``--set KEY=VALUE`` overrides
the config (e.g. ``--set train.max_steps=2 --set finetune.max_steps=2`` for a timing estimate).

    nice -n 10 .venv/bin/python bench/tofu_format_spread.py [--rows 8] [--formats 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "npo_unlearning" / "configs" / "cpu.yaml"
# ``../shared/data/tofu`` of the main checkout (a helper worktree sits one level deeper)
DATA = next((d for d in (ROOT.parent / "shared" / "data" / "tofu", ROOT.parents[1] / "shared" / "data" / "tofu")
             if d.is_dir()), ROOT / "tests" / "fixtures" / "tofu")
METRICS = ("forget.prob", "forget.rougeL")


def per_format(entry: dict) -> list[dict]:
    """Each format's template and, per metric, its value and 95% interval."""
    return [{"format_id": f["format_id"], "format": f["format"],
             **{m: {k: f["uncertainty"][m][k] for k in ("value", "ci_low", "ci_high")} for m in METRICS}}
            for f in entry["formats"]]


def markdown(out: dict) -> str:
    """The doc page's table: per format, forget probability and ROUGE-L before and after NPO, with
    their 95% intervals, then the summary over formats."""
    def cell(v: dict) -> str:
        return f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"

    lines = ["| format | template | prob before | prob after | ROUGE-L before | ROUGE-L after |", "|---|---|---|---|---|---|"]
    for b, a in zip(out["before"]["formats"], out["after"]["formats"], strict=True):
        template = b["format"].replace("\n", "\\n").replace("\t", "\\t").replace("|", "\\|")
        lines.append(f"| {b['format_id']} | `{template}` | {cell(b['forget.prob'])} | {cell(a['forget.prob'])} | "
                     f"{cell(b['forget.rougeL'])} | {cell(a['forget.rougeL'])} |")
    lines += ["", "| metric | model | original | min | median | max | spread |", "|---|---|---|---|---|---|---|"]
    for m in METRICS:
        for stage in ("before", "after"):
            s = out[stage]["summary"][m]
            lines.append(f"| {m} | {stage} | {s['original']:.3f} | {s['min']:.3f} | {s['median']:.3f} | "
                         f"{s['max']:.3f} | {s['spread']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from llmgen.config import load_config
    from llmgen.models import load_model
    from llmgen.recipes.npo_unlearning import (
        Evaluator,
        UnlearnConfig,
        finetune,
        training_streams,
        warmup_steps,
    )
    from llmgen.tasks.tofu import tofu_task
    from llmgen.training import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8, help="forget questions evaluated (cpu.yaml's eval.limit)")
    p.add_argument("--formats", type=int, default=10)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--runs", default=str(ROOT / "runs" / "repro" / "tofu_format_spread"))
    p.add_argument("--out", default=None, help="results JSON (default: <runs>/results.json)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--table", default=None, metavar="JSON", help="print the markdown table of a results JSON and exit")
    args = p.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())), end="")
        return
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    overrides = {"data": args.data, "forget_split": "forget10", "methods": ["npo"], "eval_formats": args.formats,
                 "eval.limit": args.rows, "output_dir": str(runs / "unlearn")}
    cfg = load_config(UnlearnConfig, CONFIG, [*(f"{k}={json.dumps(v) if isinstance(v, list) else v}"
                                                for k, v in overrides.items()), *args.set])
    cfg.validate()
    times: dict[str, float] = {}

    t = time.time()
    ft = finetune(cfg.model, cfg.data, "forget10", str(runs / "finetune"), cfg.finetune,
                  warmup_epochs=cfg.warmup_epochs, prompt_template=cfg.prompt_template, answer_tag=cfg.answer_tag)
    times["finetune_s"] = round(time.time() - t, 1)
    model, tok = load_model(ft, dtype=cfg.train.model_dtype)
    task = tofu_task(cfg.data, "forget10", ds_size=cfg.eval_size(), prompt_template=cfg.prompt_template,
                     max_new_tokens=cfg.eval.max_new_tokens, roles=("forget",), answer_tag=cfg.answer_tag)
    evaluator = Evaluator(cfg, task, tok)

    t = time.time()
    before, _ = evaluator.formats(model, "before")
    times["eval_before_s"] = round(time.time() - t, 1)

    t = time.time()
    streams = training_streams({"forget"}, cfg.data, "forget10", tok, cfg.prompt_template, cfg.train.max_length,
                               cfg.answer_tag, cfg.train.seed)
    tcfg = replace(cfg.train, loss="npo", loss_args=cfg.args_of("npo"), output_dir=str(runs / "npo"), progress=False,
                   eval_every=0, warmup_steps=warmup_steps(len(streams["forget"]), cfg.train.batch_size,
                                                           cfg.train.grad_accum, cfg.warmup_epochs))
    trained = train(tcfg, model=copy.deepcopy(model), tokenizer=tok, train_dataset=streams)
    times["npo_s"] = round(time.time() - t, 1)

    t = time.time()
    after, _ = evaluator.formats(trained.model, "after")
    times["eval_after_s"] = round(time.time() - t, 1)

    out = {
        "model": cfg.model, "data": cfg.data, "forget_split": "forget10", "rows": len(task.docs),
        "config": str(CONFIG.relative_to(ROOT)), "overrides": args.set, "finetune": {"split": "forget10", "steps": None},
        "npo": {"steps": trained.steps, "final_loss": trained.final_loss, "args": cfg.args_of("npo")},
        "num_formats": len(before["formats"]), "interval": "95% percentile bootstrap over the forget questions, "
        "1000 replicates, seed 0", "timings": {**times, "total_s": round(sum(times.values()), 1)},
        "before": {"summary": {m: before["summary"][m] for m in METRICS}, "formats": per_format(before)},
        "after": {"summary": {m: after["summary"][m] for m in METRICS}, "formats": per_format(after)},
    }
    ft_info = Path(ft).parent / "finetune.json"
    if ft_info.is_file():
        out["finetune"] = {"split": "forget10", **{k: v for k, v in json.loads(ft_info.read_text()).items()
                                                   if k in ("steps", "final_loss")}}
    path = Path(args.out) if args.out else runs / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for stage in ("before", "after"):
        for f in out[stage]["formats"]:
            cells = "  ".join(f"{m} {f[m]['value']:.3f} [{f[m]['ci_low']:.3f}, {f[m]['ci_high']:.3f}]" for m in METRICS)
            print(f"{stage:6} {f['format_id']:2d} {f['format']!r:40.40} {cells}")
    print(json.dumps(out["timings"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
