"""``llmgen format-spread``: accuracy spread of a model across plausible prompt formats.

Logic lives in ``llmgen.recipes.format_spread``; this module only reads the config (``--config
FILE`` plus ``key=value`` overrides; ``--help`` lists every key) and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command

# Shortcut flag -> config key (tests/cli/test_cli.py checks every key against FormatSpreadConfig).
FLAGS = {
    "--model": "model", "--backend": "eval.backend", "--task": "task", "--num-formats": "num_formats",
    "--shots": "shots", "--mode": "mode", "--budget": "budget", "--batch": "batch", "--metric": "metric",
    "--normalize": ("normalize", "true"), "--apply-chat-template": ("chat", "true"), "--limit": "eval.limit",
    "--num-generated": "num_generated", "--formats-file": "formats_file", "--seed": "seed",
    "--output-dir": "output_dir",
}


def format_spread(ctx: typer.Context, config_file: Path | None = CONFIG_OPTION) -> None:
    """Measure how much accuracy moves across prompt formats (Sclar et al., ICLR 2024).

    Settings come from --config FILE and KEY=VALUE overrides (e.g. mode=exhaustive num_formats=50).
    """
    from rich.console import Console

    from llmgen.io import RunFolder
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = config_options(FormatSpreadConfig, config_file, ctx.args, FLAGS)
    output_dir = cfg.output_dir
    # held (locked) for the run; a folder of the user's files is refused, an earlier run resumed
    with RunFolder(output_dir, resume=True):
        res = run(cfg)
    entry = next(iter(res["format_spread"].values()))
    console = Console(highlight=False)
    console.print(f"task {entry['task']['name']}, {len(entry['formats'])} formats, {res['n_samples'][entry['task']['name']]} "
                  f"examples, {entry['evaluations']} evaluations ({entry['exhaustive_evaluations']} for exhaustive)")
    for key in ("original", "worst", "best"):
        r = entry["extremes"][key]
        console.print(f"{key:>8}: {100 * r['accuracy']:5.1f}%  format {r['format_id']}")
    console.print(f"best format:  {entry['extremes']['best']['format']!r}")
    console.print(f"worst format: {entry['extremes']['worst']['format']!r}")
    console.print(f"spread: {100 * entry['spread']:.1f} points  → {output_dir}/results.json")


def register(app: typer.Typer) -> None:
    register_config_command(app, "format-spread", format_spread, "llmgen.recipes.format_spread:FormatSpreadConfig",
                            FLAGS)
