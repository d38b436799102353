"""``llmgen instruction-diversity``: Only-IF experiments (``sweep``) and instruction-dataset diversity (``dataset``).

Logic lives in ``llmgen.recipes.instruction_diversity``; this module parses options and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.cli.config_args import CONFIG_OPTION, config_options, register_config_command
from llmgen.display import print_table

# Shortcut flag -> config key (tests/cli/test_cli.py checks both tables against the dataclasses).
SWEEP_FLAGS = {
    "--output-dir": "output_dir", "--num-instructions": "num_instructions", "--seeds": "seeds",
    "--budget": "task.budget", "--noop-fraction": "task.noop_fraction",
    "--test-noop-fraction": "task.test_noop_fraction", "--alpha": "task.power_law_alpha",
    "--epochs": "train.epochs", "--max-steps": "train.max_steps",
}
DATASET_FLAGS = {
    "--field": "instruction_field", "--domain-field": "domain_field", "--limit": "limit", "--threshold": "threshold",
    "--select": "select_size", "--select-output": "select_output", "--weight": "domain_weights.",
    "--embedding-model": "embedding_model", "--seed": "seed", "--output-dir": "output_dir",
}


def sweep(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    paper: bool = typer.Option(False, "--paper", help="Start from the paper's scale (50/20 strings, 10^6 budget, "
                                                     "6x256, inputs always contain the pattern)."),
    paper_semantic: bool = typer.Option(False, "--paper-semantic",
                                        help="Start from the paper's semantic-diversity experiment (500/60 strings, "
                                             "repeated/periodic/mirrored k=3..6 for training, k<3 for test)."),
) -> None:
    """Train from scratch on Markov rewriting over a grid of instruction counts; table + plot.

    Settings come from --config FILE (or a paper preset) and KEY=VALUE overrides, e.g.
    num_instructions=[10,100] task.budget=5000 domain_mixtures=[[repeated:2,periodic:3]].
    """
    from rich.console import Console

    from llmgen.errors import LlmgenError
    from llmgen.io import RunFolder
    from llmgen.recipes.instruction_diversity import SweepConfig, run_sweep

    if sum((config is not None, paper, paper_semantic)) > 1:
        raise LlmgenError("give at most one of --config, --paper and --paper-semantic")
    base = SweepConfig.paper() if paper else SweepConfig.paper_semantic() if paper_semantic else None
    cfg = config_options(SweepConfig, config, ctx.args, SWEEP_FLAGS, base=base)
    # held (locked) for the run; a folder of the user's files is refused, an earlier run resumed
    with RunFolder(cfg.output_dir, resume=True):
        result = run_sweep(cfg)
    console = Console()
    console.print(Path(result["output_dir"], "results.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"ran {result['ran']} cell(s), reused {result['skipped']}; "
                  f"wrote {result['output_dir']}/results.json, results.md, accuracy_vs_instructions.png")


def dataset(ctx: typer.Context, config: Path | None = CONFIG_OPTION) -> None:
    """Embed a dataset's instructions; report clusters, mean cosine distance, Vendi score; select a subset.

    Sources (JSONL/CSV files, saved `datasets` folders or hub ids; each is a domain) are the
    positional arguments or data=[...]; other settings are KEY=VALUE overrides or the flags below.
    """
    from rich.console import Console
    from rich.table import Table

    from llmgen.io import RunFolder
    from llmgen.recipes.instruction_diversity import DatasetDiversityConfig, run_dataset_diversity

    cfg = config_options(DatasetDiversityConfig, config, ctx.args, DATASET_FLAGS, positional="data")
    output_dir, threshold = cfg.output_dir, cfg.threshold
    # held (locked) for the run; a folder of the user's files is refused, an earlier run resumed
    with RunFolder(output_dir, resume=True):
        res = run_dataset_diversity(cfg)
    table = Table(title=f"instruction diversity ({res['rows']} rows, threshold {threshold})")
    for col in ("set", "n", "clusters", "mean cos dist", "Vendi"):
        table.add_column(col, justify="left" if col == "set" else "right")

    def add(name: str, r: dict) -> None:
        table.add_row(name, str(r["n"]), str(r["num_clusters"]), f"{r['mean_pairwise_distance']:.3f}",
                      f"{r['vendi_score']:.2f}")

    add("all", res["overall"])
    for d, r in res["domains"].items():
        add(f"domain {d}", r)
    if "selection" in res:
        add("selected subset", res["selection"]["selected"])
        add("random subset", res["selection"]["random_subset"])
    console = Console()
    print_table(table, console)
    if "selection" in res:
        console.print(f"wrote {res['selection']['path']} ({res['selection']['domains']})")
    console.print(f"wrote {res['output_dir']}/results.json, projection.png")


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="Only-IF: instruction diversity experiments and dataset diversity.")
    register_config_command(group, "sweep", sweep, "llmgen.recipes.instruction_diversity:SweepConfig", SWEEP_FLAGS)
    register_config_command(group, "dataset", dataset, "llmgen.recipes.instruction_diversity:DatasetDiversityConfig",
                            DATASET_FLAGS)
    app.add_typer(group, name="instruction-diversity")
