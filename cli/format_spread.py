"""``llmgen format-spread``: accuracy spread of a model across plausible prompt formats.

Logic lives in ``llmgen.recipes.format_spread``; this module only parses options and prints.
"""

from __future__ import annotations

import typer


def formatspread(
    model: str = typer.Option("default", help="Model: 'default', a folder, a .gguf file or a hub id."),
    backend: str = typer.Option("hf", help="Backend: hf or vllm."),
    task: str = typer.Option("sentiment", help="Built-in task (sentiment, parity, comparison, topic), "
                             "a Super-NaturalInstructions .json or a .jsonl file."),
    num_formats: int = typer.Option(10, "--num-formats", help="Formats to compare, the original included."),
    shots: int = typer.Option(1, help="Demonstrations per prompt."),
    mode: str = typer.Option("thompson", help="thompson, ucb (budgeted bandits) or exhaustive."),
    budget: int = typer.Option(400, help="Bandit budget E: evaluations (examples × formats)."),
    batch: int = typer.Option(20, help="Bandit batch B: examples per pull."),
    metric: str = typer.Option("probability_ranking", help="probability_ranking or exact_prefix_matching."),
    normalize: bool = typer.Option(False, "--normalize", help="Rank by logprob per answer character (acc_norm)."),
    chat: bool = typer.Option(False, "--apply-chat-template", help="Wrap prompts in the chat template."),
    limit: int = typer.Option(100, help="Evaluation examples per format."),
    num_generated: int = typer.Option(210, "--num-generated", help="Examples generated for a built-in task."),
    formats_file: str = typer.Option(None, "--formats-file", help="Reuse this format set (written if absent)."),
    seed: int = typer.Option(0, help="Seed of format sampling, example order and the bandit."),
    output_dir: str = typer.Option("runs/format_spread", "--output-dir", help="Run folder to write."),
) -> None:
    """Measure how much accuracy moves across prompt formats (Sclar et al., ICLR 2024)."""
    from rich.console import Console

    from llmgen.io import check_output_dir
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    check_output_dir(output_dir, overwrite=True)  # a file in the way fails now, not after scoring
    cfg = FormatSpreadConfig(model=model, backend=backend, task=task, num_formats=num_formats, shots=shots,
                             limit=limit, num_generated=num_generated, mode=mode, budget=budget, batch=batch,
                             metric=metric, normalize=normalize, chat=chat, formats_file=formats_file, seed=seed,
                             output_dir=output_dir)
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
    app.command("format-spread")(formatspread)
