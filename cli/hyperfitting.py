"""``llmgen hyperfitting``: the hyperfitting recipe (Carlsson et al., ICLR 2025) from the command line.

Defaults are the paper's (2000 x 256-token sequences, 20 epochs, lr 1e-6, batch 8); on a CPU scale
down with ``num_sequences=``, ``seq_len=``, ``train.epochs=`` and a larger ``train.lr=`` (or a
committed config: ``--config recipes/hyperfitting/configs/tiny.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command
from llmgen.display import print_table

# Shortcut flag -> config key (tests/cli/test_cli.py checks every key against HyperfittingConfig).
FLAGS = {
    "--model": "model", "--text": "text_source", "--sequences": "num_sequences", "--seq-len": "seq_len",
    "--prompts": "num_prompts", "--prompt-len": "prompt_len", "--gen-len": "eval.max_new_tokens",
    "--epochs": "train.epochs", "--lr": "train.lr", "--batch-size": "train.batch_size",
    "--citation-blocker": ("citation_blocker", "true"), "--output": "output_dir", "-o": "output_dir",
}


def hyperfitting(ctx: typer.Context, config_file: Path | None = CONFIG_OPTION) -> None:
    """Hyperfit a model on a few sequences and compare long greedy continuations with the base model.

    Settings come from --config FILE and KEY=VALUE overrides (e.g. train.epochs=5 seq_len=128).
    """
    from rich.console import Console
    from rich.table import Table

    from llmgen.io import RunFolder
    from llmgen.recipes.hyperfitting import HyperfittingConfig, run

    config = config_options(HyperfittingConfig, config_file, ctx.args, FLAGS)
    config.validate()
    output = config.output_dir
    # held (locked) for the run; a folder of the user's files is refused, an earlier run resumed
    with RunFolder(output, resume=True):
        results = run(config)
    gens = results["generators"]
    metrics = list(next(iter(gens.values())))
    table = Table(title=f"hyperfitting: {len(results['epochs']) - 1} evaluations, {results['seconds']} s")
    table.add_column("metric")
    for name in gens:
        table.add_column(name, justify="right")
    for m in metrics:
        table.add_row(m, *(f"{gens[name][m]:.4g}" for name in gens))
    console = Console()
    print_table(table, console)
    console.print(f"wrote {output}/results.json, samples.jsonl and plots")


def register(app: typer.Typer) -> None:
    register_config_command(app, "hyperfitting", hyperfitting, "llmgen.recipes.hyperfitting:HyperfittingConfig", FLAGS)
