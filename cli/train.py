"""``llmgen train``: fine-tune a model on a JSONL/CSV/``datasets`` file with any registered loss.

Runs unchanged under ``accelerate launch`` / ``torchrun`` (see docs/training.md). The settings are
one ``TrainConfig``: ``--config FILE`` (YAML/JSON with its field names) plus ``key=value``
overrides, and a ``--flag`` shortcut for every field (``FLAGS``, generated from the dataclass, so
no field is unreachable; ``tests/cli/test_cli.py`` checks the table).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command
from llmgen.training.config import TrainConfig

# TrainConfig fields with no --flag, and why (they are still KEY=VALUE overrides).
NOT_FLAGS = {"eval_every": "an eval hook is a Python function (train(eval_fn=...)); the command has none"}
SWITCHES = {"--cpu": ("cpu", "true"), "--gradient-checkpointing": ("gradient_checkpointing", "true"),
            "--resume": ("resume", "true"), "--save-final": ("save_final", "true"),
            "--no-save-final": ("save_final", "false"), "--progress": ("progress", "true"),
            "--no-progress": ("progress", "false")}
# Shortcut flag -> config key: --field-name for every field, switches for the booleans.
FLAGS = {
    **{f"--{f.name.replace('_', '-')}": f.name for f in dataclasses.fields(TrainConfig)
       if f.name not in NOT_FLAGS and f.type not in ("bool", "bool | None") and f.name != "loss_args"},
    "--loss-arg": "loss_args.", "-o": "output_dir", **SWITCHES,
}


def train_cmd(
    ctx: typer.Context,
    config_file: Path | None = CONFIG_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in a non-empty output folder"),
) -> None:
    """Fine-tune a model (full or LoRA) through the shared training loop.

    Settings come from --config FILE, KEY=VALUE overrides (e.g. lr=2e-4 lora_r=16
    loss_args.beta=0.1) and the shortcut flags below (--model, --data, --lr, ...). Without
    output_dir the run goes to a fresh runs/train-<timestamp> folder.
    """
    import os
    import sys

    from llmgen.errors import LlmgenError
    from llmgen.io import RunFolder, default_run_dir
    from llmgen.training import is_main_process, train
    from llmgen.training.loop import RUN_FILES, check_resume

    cfg = config_options(TrainConfig, config_file, ctx.args, FLAGS)
    for key in ("model", "data"):
        if getattr(cfg, key) is None:
            raise LlmgenError(f"llmgen train needs {key} (--{key} or {key}=... or in --config)")
    if cfg.eval_every:
        raise LlmgenError(f"eval_every: {NOT_FLAGS['eval_every']}")
    # Under accelerate/torchrun every process runs this command: they must agree on one folder,
    # and only the first may refuse it (the others may find it already started).
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    first = os.environ.get("RANK", "0") == "0"
    if cfg.output_dir == TrainConfig.output_dir:  # not given: a fresh folder per run
        if cfg.resume or several:
            raise LlmgenError("resume or a launch on several processes needs output_dir (--output-dir)")
        cfg.output_dir = str(default_run_dir("train"))
        print(f"run folder: {cfg.output_dir}", file=sys.stderr)
    # All before loading a model, so bad settings fail fast and nothing is written.
    cfg.validate()
    if overwrite:
        cfg.resume = False
    check_resume(cfg)
    # The folder is held (locked) for the run; only the files an earlier run wrote are replaced
    with RunFolder(cfg.output_dir, overwrite=overwrite, resume=cfg.resume or not first, run_files=RUN_FILES):
        result = train(cfg)
    if result.num_processes == 1 or is_main_process():
        typer.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}, "
                   f"{result.tokens_per_s:.0f} tokens/s -> {result.final_path or result.output_dir}")


def register(app: typer.Typer) -> None:
    register_config_command(app, "train", train_cmd, "llmgen.training.config:TrainConfig", FLAGS)
