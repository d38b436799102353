"""``llmgen instruction-diversity``: Only-IF experiments (``sweep``) and instruction-dataset diversity (``dataset``).

Logic lives in ``llmgen.recipes.instruction_diversity``; this module parses options and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _ints(text: str, name: str) -> list[int]:
    from llmgen.errors import LlmgenError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LlmgenError(f"{name} must be comma-separated integers, got {text!r}") from None


def sweep(
    config: Path = typer.Option(None, "--config", help="JSON file with SweepConfig fields (options below override it)."),
    output_dir: Path = typer.Option(None, "--output-dir", help="Run folder (resumes finished cells found there)."),
    num_instructions: str = typer.Option(None, "--num-instructions", help="Grid, e.g. 10,100,1000."),
    budget: int = typer.Option(None, help="Training examples per cell (instructions x examples each)."),
    mixture: list[str] = typer.Option(None, "--mixture", help="A domain mixture, e.g. 'repeated:2,periodic:3' (repeatable)."),
    seeds: str = typer.Option(None, help="Seeds, e.g. 0,1,2."),
    noop_fraction: float = typer.Option(None, "--noop-fraction", help="Share of no-op training examples."),
    test_noop_fraction: float = typer.Option(None, "--test-noop-fraction",
                                             help="Share of no-op test examples (paper presets: 0)."),
    power_law_alpha: float = typer.Option(None, "--alpha", help="Power-law frequency exponent (omit: uniform)."),
    epochs: float = typer.Option(None, help="Training epochs per cell."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps per cell (overrides epochs)."),
    paper: bool = typer.Option(False, "--paper", help="Start from the paper's scale (50/20 strings, 10^6 budget, "
                                                     "6x256, inputs always contain the pattern)."),
    paper_semantic: bool = typer.Option(False, "--paper-semantic",
                                        help="Start from the paper's semantic-diversity experiment (500/60 strings, "
                                             "repeated/periodic/mirrored k=3..6 for training, k<3 for test)."),
) -> None:
    """Train from scratch on Markov rewriting over a grid of instruction counts; table + plot."""
    from rich.console import Console

    from llmgen.errors import LlmgenError
    from llmgen.io import check_output_dir, read_json
    from llmgen.recipes.instruction_diversity import SweepConfig, run_sweep

    if sum((config is not None, paper, paper_semantic)) > 1:
        raise LlmgenError("give at most one of --config, --paper and --paper-semantic")
    if config:
        cfg = SweepConfig.from_dict(read_json(config))
    else:
        cfg = SweepConfig.paper() if paper else SweepConfig.paper_semantic() if paper_semantic else SweepConfig()
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    # the sweep resumes finished cells inside its folder: only a file in the way is an error
    check_output_dir(cfg.output_dir, overwrite=True)
    if num_instructions:
        cfg.num_instructions = _ints(num_instructions, "--num-instructions")
    if seeds:
        cfg.seeds = _ints(seeds, "--seeds")
    if mixture:
        cfg.domain_mixtures = [[d.strip() for d in m.split(",") if d.strip()] for m in mixture]
    for name, value in (("budget", budget), ("noop_fraction", noop_fraction), ("test_noop_fraction", test_noop_fraction),
                        ("power_law_alpha", power_law_alpha)):
        if value is not None:
            setattr(cfg.task, name, value)
    if epochs is not None:
        cfg.epochs = epochs
    if max_steps is not None:
        cfg.max_steps = max_steps
    result = run_sweep(cfg)
    console = Console()
    console.print(Path(result["output_dir"], "results.md").read_text(), markup=False, highlight=False)
    console.print(f"ran {result['ran']} cell(s), reused {result['skipped']}; "
                  f"wrote {result['output_dir']}/results.json, results.md, accuracy_vs_instructions.png")


def dataset(
    data: list[str] = typer.Argument(..., help="JSONL/CSV files, saved `datasets` folders or hub ids; each is a domain."),
    instruction_field: str = typer.Option("instruction", "--field", help="Field holding the instruction text."),
    domain_field: str = typer.Option(None, "--domain-field", help="Per-row domain field (default: one domain per source)."),
    limit: int = typer.Option(None, help="At most this many rows per source (seeded sample)."),
    threshold: float = typer.Option(0.5, help="Cosine-distance threshold for counting clusters."),
    select_size: int = typer.Option(0, "--select", help="Write a diversity-maximising subset of this size."),
    select_output: Path = typer.Option(None, "--select-output", help="Where to write the subset (JSONL)."),
    weight: list[str] = typer.Option(None, "--weight", help="Domain weight for the subset, e.g. code=3 (repeatable)."),
    embedding_model: str = typer.Option("all-MiniLM-L6-v2", "--embedding-model", help="Alias, model folder or hub id."),
    seed: int = typer.Option(0, help="Seed for sampling and selection."),
    output_dir: Path = typer.Option(Path("runs/dataset_diversity"), "--output-dir", help="Report folder."),
) -> None:
    """Embed a dataset's instructions; report clusters, mean cosine distance, Vendi score; select a subset."""
    from rich.console import Console
    from rich.table import Table

    from llmgen.errors import LlmgenError
    from llmgen.io import check_output_dir
    from llmgen.recipes.instruction_diversity import DatasetDiversityConfig, run_dataset_diversity

    weights = {}
    for w in weight or []:
        name, _, value = w.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise LlmgenError(f"--weight must look like domain=number, got {w!r}") from None
    cfg = DatasetDiversityConfig(data=list(data), instruction_field=instruction_field, domain_field=domain_field,
                                 limit=limit, threshold=threshold, select_size=select_size,
                                 select_output=str(select_output) if select_output else None,
                                 domain_weights=weights or None, embedding_model=embedding_model, seed=seed,
                                 output_dir=str(output_dir))
    check_output_dir(output_dir, overwrite=True)  # a file in the way fails before the embedding model loads
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
    console.print(table)
    if "selection" in res:
        console.print(f"wrote {res['selection']['path']} ({res['selection']['domains']})")
    console.print(f"wrote {res['output_dir']}/results.json, projection.png")


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="Only-IF: instruction diversity experiments and dataset diversity.")
    group.command("sweep")(sweep)
    group.command("dataset")(dataset)
    app.add_typer(group, name="instruction-diversity")
