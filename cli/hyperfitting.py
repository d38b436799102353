"""``llmgen hyperfitting``: the hyperfitting recipe (Carlsson et al., ICLR 2025) from the command line.

Defaults are the paper's (2000 x 256-token sequences, 20 epochs, lr 1e-6, batch 8); on a CPU scale
down with ``--sequences``, ``--seq-len``, ``--epochs`` and a larger ``--lr``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def hyperfit(
    model: str = typer.Option("default", help="Model: built-in name, folder, .gguf file or hub id."),
    text: str = typer.Option("stdlib", "--text", help="Text: 'stdlib', a .txt/.jsonl file or hf:<name>[:<config>]:<split>."),
    text_field: str = typer.Option("text", help="Field holding the text in .jsonl / datasets sources."),
    split: str = typer.Option("document", help="document: the paper's split, the first --seq-len tokens of each "
                                              "document; stream: chunks of the concatenated documents."),
    pool_tokens: int = typer.Option(0, help="Split stream: draw chunks at random from the first N tokens (0: the first chunks)."),
    sequences: int = typer.Option(2000, help="Training sequences."),
    seq_len: int = typer.Option(256, help="Tokens per training sequence."),
    prompts: int = typer.Option(64, help="Held-out sequences: prompts and held-out perplexity."),
    prompt_len: int = typer.Option(32, help="Prompt tokens."),
    gen_len: int = typer.Option(256, help="Generated tokens per prompt (fixed, no EOS stop)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    lr: float = typer.Option(1e-6, help="Learning rate (Adam, no weight decay)."),
    batch_size: int = typer.Option(8, help="Training batch size."),
    lora_r: int = typer.Option(0, help="LoRA rank (0: full fine-tuning, as in the paper)."),
    top_p: float = typer.Option(0.9, help="top-p of the sampling baseline."),
    blocker: bool = typer.Option(False, "--citation-blocker", help="Also generate with training 5-grams blocked."),
    eval_every: int = typer.Option(1, help="Measure the model every N epochs."),
    epoch_eval_prompts: int = typer.Option(16, help="Prompts used for the per-epoch measurements."),
    seed: int = typer.Option(0, help="Seed for data split, training order and sampling."),
    device: str = typer.Option("cpu", help="Device: cpu, cuda, ..."),
    dtype: str = typer.Option("float32", help="Model dtype."),
    output: Path = typer.Option(Path("runs/hyperfitting"), "--output", "-o", help="Run folder."),
    save_model: bool = typer.Option(False, help="Save the hyperfitted model in <output>/model."),
) -> None:
    """Hyperfit a model on a few sequences and compare long greedy continuations with the base model."""
    from rich.console import Console
    from rich.table import Table

    from llmgen.io import check_output_dir
    from llmgen.recipes.hyperfitting import HyperfittingConfig, run

    check_output_dir(output, overwrite=True)  # a file in the way fails now, not after training

    config = HyperfittingConfig(
        model=model, text_source=text, text_field=text_field, split=split, pool_tokens=pool_tokens or None, num_sequences=sequences, seq_len=seq_len,
        num_prompts=prompts, prompt_len=prompt_len, gen_len=gen_len, epochs=epochs, lr=lr, batch_size=batch_size,
        lora_r=lora_r, top_p=top_p, citation_blocker=blocker, eval_every=eval_every,
        epoch_eval_prompts=min(epoch_eval_prompts, prompts), seed=seed, device=device, dtype=dtype,
        output_dir=str(output), save_model=save_model,
    )
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
    console.print(table)
    console.print(f"wrote {output}/results.json, samples.jsonl and plots")


def register(app: typer.Typer) -> None:
    app.command("hyperfitting")(hyperfit)
