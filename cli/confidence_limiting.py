"""``llmgen confidence-limiting``: fine-tune with cross-entropy and with DCO(N) and compare pass@k curves.

The logic lives in ``llmgen.recipes.confidence_limiting``; this module only parses options.
"""

from __future__ import annotations

from pathlib import Path

import typer


def passn(
    model: str = typer.Option("default", help="Base model: name, folder, .gguf file or hub id."),
    output_dir: Path = typer.Option(Path("runs/passn"), "--output-dir", "-o", help="Run folder."),
    train_data: str = typer.Option(None, help="MATH-format train problems (JSON/JSONL/folder); default: generated task."),
    test_data: str = typer.Option(None, help="MATH-format test problems (needed with --train-data)."),
    n_train: int = typer.Option(2000, help="Training problems (generated task, or a limit on --train-data)."),
    n_test: int = typer.Option(100, help="Test problems."),
    difficulty: int = typer.Option(2, help="Generated task: steps per problem."),
    methods: str = typer.Option("ce,dco", help="Comma-separated methods: ce, dco."),
    n: int = typer.Option(16, "--n", "-N", help="DCO's N: the number of test-time samples to optimise for."),
    threshold: float = typer.Option(0.1, help="Drop training examples whose DCO weight F is at or below this."),
    refill: bool = typer.Option(True, help="Score each batch with the current weights, drop F <= threshold "
                                           "and refill it from the next examples (as the reference)."),
    normalization: str = typer.Option("example_mean", help="DCO loss: example_mean (mean of F·NLL/|y|, the "
                                                           "reference), token_mean or sum."),
    epochs: int = typer.Option(4, help="Training epochs (passes over the candidate examples)."),
    eval_every: int = typer.Option(1, help="Evaluate pass@k every this many epochs' worth of steps (and at the end)."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    batch_size: int = typer.Option(32, help="Training batch size."),
    lora_r: int = typer.Option(0, help="LoRA rank (0: full fine-tuning)."),
    samples: int = typer.Option(64, help="Samples per test problem at temperature 1 (pass@k up to this)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature for pass@k."),
    max_new_tokens: int = typer.Option(8, help="Tokens generated per answer."),
    backend: str = typer.Option("hf", help="Generation backend for evaluation: hf or vllm."),
    seed: int = typer.Option(0, help="Seed for the task split, training order and sampling."),
) -> None:
    """Limit confidence for better pass@N (Chen et al. 2025): CE vs DCO(N) fine-tuning."""
    from llmgen.errors import LlmgenError
    from llmgen.io import check_output_dir
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, run

    if (train_data is None) != (test_data is None):
        raise LlmgenError("give both --train-data and --test-data, or neither (generated task)")
    check_output_dir(output_dir, overwrite=True)  # a file in the way fails now, not after training
    config = ConfidenceLimitingConfig(
        model=model, output_dir=str(output_dir), task="generated" if train_data is None else "math",
        train_data=train_data, test_data=test_data, n_train=n_train, n_test=n_test, difficulty=difficulty,
        task_seed=seed, methods=tuple(m.strip() for m in methods.split(",") if m.strip()), dco_n=n,
        dco_threshold=threshold, dco_normalization=normalization, refill=refill, epochs=epochs, eval_every=eval_every, lr=lr,
        batch_size=batch_size, lora_r=lora_r,
        samples=samples, temperature=temperature, max_new_tokens=max_new_tokens, backend=backend, seed=seed,
    )
    results = run(config)
    cmp = results["comparison"]
    for method in config.methods:
        for key, values in cmp[method].items():
            if key != "epochs":
                typer.echo(f"{method:>4} {key:<20} " + " ".join(f"{v:.3f}" for v in values))
    typer.echo(f"wrote {output_dir}/results.json, samples.jsonl, " + ", ".join(results["plots"]))


def register(app: typer.Typer) -> None:
    app.command("confidence-limiting")(passn)
