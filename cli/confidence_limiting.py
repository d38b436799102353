"""``llmgen confidence-limiting``: fine-tune with cross-entropy and with DCO(N) and compare pass@k curves.

The logic lives in ``llmgen.recipes.confidence_limiting``; this module only reads the config
(``--config FILE`` plus ``key=value`` overrides; ``--help`` lists every key) and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command

# Shortcut flag -> config key (tests/cli/test_cli.py checks every key against ConfidenceLimitingConfig).
FLAGS = {
    "--model": "model", "--output-dir": "output_dir", "-o": "output_dir", "--train-data": "train_data",
    "--test-data": "test_data", "--n-train": "n_train", "--n-test": "n_test", "--methods": "methods",
    "--n": "dco_n", "-N": "dco_n", "--epochs": "train.epochs", "--lr": "train.lr",
    "--batch-size": "train.batch_size", "--samples": "eval.num_samples", "--max-new-tokens": "eval.max_new_tokens",
    "--seed": "train.seed",
}


def confidence_limiting(ctx: typer.Context, config_file: Path | None = CONFIG_OPTION) -> None:
    """Limit confidence for better pass@N (Chen et al. 2025): CE vs DCO(N) fine-tuning.

    Settings come from --config FILE and KEY=VALUE overrides (e.g. dco_n=8 train.epochs=2);
    train_data/test_data (MATH-format files) replace the generated task (task=math).
    """
    from llmgen.errors import LlmgenError
    from llmgen.io import RunFolder
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, run

    config = config_options(ConfidenceLimitingConfig, config_file, ctx.args, FLAGS)
    if (config.train_data is None) != (config.test_data is None):
        raise LlmgenError("give both train_data and test_data (--train-data/--test-data), or neither (generated task)")
    if config.train_data is not None:
        config.task = "math"
    config.validate()
    output_dir = config.output_dir
    # held (locked) for the run; a folder of the user's files is refused, an earlier run resumed
    with RunFolder(output_dir, resume=True):
        results = run(config)
    cmp = results["comparison"]
    for method in config.methods:
        for key, values in cmp[method].items():
            if key != "epochs":
                typer.echo(f"{method:>4} {key:<20} " + " ".join(f"{v:.3f}" for v in values))
    typer.echo(f"wrote {output_dir}/results.json, samples.jsonl, " + ", ".join(results["plots"]))


def register(app: typer.Typer) -> None:
    register_config_command(app, "confidence-limiting", confidence_limiting, "llmgen.recipes.confidence_limiting:ConfidenceLimitingConfig", FLAGS)
