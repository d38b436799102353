"""``llmgen npo-unlearning``: NPO-style unlearning evaluated with TOFU (Zhang et al. 2024; Maini et al. 2024).

The TOFU pipeline has three model-producing stages, picked with ``--stage``:

- ``finetune``: fine-tune ``--model`` on TOFU ``full`` → ``<output>/model`` (the model to unlearn);
- ``retain-logs``: fine-tune ``--model`` on the retain split only, evaluate it on the forget split and
  write ``--retain-logs`` (add ``--no-train`` when ``--model`` already is a retain-only model);
- ``unlearn`` (default): unlearn the forget split from ``--model`` with each ``--method``, evaluating
  forget quality (needs ``--retain-logs``) and model utility along the way.

``data=synthetic`` reads the deterministic synthetic TOFU-format set in llmgen's cache (the same
one ``llmgen eval --tasks tofu_*`` reads; the hub is often unreachable); a folder of TOFU files or
``locuslab/TOFU`` work too. Every setting is a key of ``UnlearnConfig`` (``--config FILE`` plus
``key=value`` overrides; ``--help`` lists them): the unlearning stage trains with ``train.*``
(open-unlearning's defaults), the fine-tuning stages with ``finetune.*`` (TOFU's).
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command
from llmgen.display import print_table
from llmgen.errors import LlmgenError

STAGES = ("unlearn", "finetune", "retain-logs")

# Shortcut flag -> config key (tests/cli/test_cli.py checks every key against UnlearnConfig).
FLAGS = {
    "--method": "methods", "--model": "model", "--data": "data", "--forget": "forget_split",
    "--retain-logs": "retain_logs", "--steps": "train.max_steps", "--lr": "train.lr",
    "--batch-size": "train.batch_size", "--eval-every": "train.eval_every", "--eval-limit": "eval.limit",
    "--max-new-tokens": "eval.max_new_tokens", "--prompt-template": "prompt_template",
    "--output-dir": "output_dir", "-o": "output_dir",
}


def npo_unlearning(
    ctx: typer.Context,
    config_file: Path | None = CONFIG_OPTION,
    stage: str = typer.Option("unlearn", help="unlearn, finetune or retain-logs (see the command help)."),
    train_retain: bool = typer.Option(True, "--train/--no-train", help="retain-logs: fine-tune on retain first."),
) -> None:
    """Unlearn a TOFU forget split (or prepare the fine-tuned / retain-only models).

    Settings come from --config FILE and KEY=VALUE overrides (e.g. train.lr=1e-5 methods=[ga,npo]);
    the unlearn stage trains with the train section, finetune and retain-logs with the finetune
    section.
    """
    if stage not in STAGES:
        raise LlmgenError(f"unknown stage {stage!r} (use {', '.join(STAGES)})")
    from rich.console import Console

    from llmgen.recipes.npo_unlearning import UnlearnConfig

    console = Console()
    config = config_options(UnlearnConfig, config_file, ctx.args, FLAGS)
    config.validate()
    from llmgen.io import RunFolder

    output, forget = Path(config.output_dir), config.forget_split
    # held (locked) for the run; stages share the folder (an earlier stage's files stay), a folder of
    # the user's files is refused
    with RunFolder(output, resume=True):
        results = _stage(console, config, stage, train_retain)
    if results is None:
        return
    from llmgen.training import is_main_process

    if not is_main_process():
        return
    from rich.table import Table

    table = Table(title=f"TOFU unlearning ({forget})")
    for col in ("method", "step", "forget quality", "model utility", "forget prob", "forget ROUGE-L"):
        table.add_column(col, justify="right")
    rows = [("start", {"step": 0, **results["start"]})] + [(m, r["final"]) for m, r in results["methods"].items()]
    for name, r in rows:
        table.add_row(name, str(r["step"]), f"{r['forget_quality']:.3g}", f"{r['model_utility']:.3f}",
                      f"{r['forget.prob']:.3f}", f"{r['forget.rougeL']:.3f}")
    print_table(table, console)
    console.print(f"wrote {output}/results.json, samples.jsonl, curve.png, table.md")


def _stage(console, config, stage: str, train_retain: bool) -> dict | None:
    """Run one stage into the held run folder; the unlearn stage's results (None for the others)."""
    from llmgen.io import check_output_file
    from llmgen.recipes.npo_unlearning import data_source, finetune, make_retain_logs, run
    from llmgen.tasks.tofu import load_tofu, retain_config, tofu_task

    output, forget = Path(config.output_dir), config.forget_split
    ft_kw = dict(warmup_epochs=config.warmup_epochs, prompt_template=config.prompt_template, answer_tag=config.answer_tag)
    if stage == "finetune":
        folder = finetune(config.model, data_source(config), "full", str(output), config.finetune, **ft_kw)
        console.print(f"fine-tuned model: {folder}")
        return None
    if stage == "retain-logs":
        if config.retain_logs is None:
            raise LlmgenError("--stage retain-logs needs retain_logs=PATH (or --retain-logs PATH) to write to")
        source = data_source(config)
        # every file the stage reads or writes is checked before the (minutes of) fine-tuning
        check_output_file(config.retain_logs, overwrite=True)
        tofu_task(source, forget, ds_size=config.eval_size(), prompt_template=config.prompt_template, roles=("forget",))
        if train_retain:
            load_tofu(source, retain_config(forget))
        retain_model = (finetune(config.model, source, retain_config(forget), str(output), config.finetune, **ft_kw)
                        if train_retain else config.model)
        make_retain_logs(retain_model, source, forget, config.retain_logs, eval_limit=config.eval_size(),
                         backend=config.eval.backend, dtype=config.finetune.model_dtype,
                         prompt_template=config.prompt_template, max_new_tokens=config.eval.max_new_tokens,
                         answer_tag=config.answer_tag)
        console.print(f"retain-model logs: {config.retain_logs} (model {retain_model})")
        return None
    return run(config)


def register(app: typer.Typer) -> None:
    register_config_command(app, "npo-unlearning", npo_unlearning, "llmgen.recipes.npo_unlearning:UnlearnConfig", FLAGS)
