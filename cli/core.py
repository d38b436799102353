"""Core commands: ``llmgen eval``, ``llmgen tasks``, ``llmgen models``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmgen.errors import LlmgenError


def parse_model_args(text: str | None) -> dict:
    """``key=value,key=value`` (lm-eval style) or a JSON object."""
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise LlmgenError(f"--model-args is not valid JSON: {e.msg}") from None
    out: dict = {}
    for part in text.split(","):
        if "=" not in part:
            raise LlmgenError(f"--model-args entry {part!r} is not key=value")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def set_task_sources(include_path: str | None, data_dir: str | None) -> None:
    """``--include-path`` / ``--data-dir`` → the environment variables task loading reads (so that
    validation, every rank and every later process see the same sources)."""
    import os

    from llmgen.hf_data import DATA_DIR_ENV
    from llmgen.lmeval import INCLUDE_ENV

    for value, var, what in ((include_path, INCLUDE_ENV, "--include-path"), (data_dir, DATA_DIR_ENV, "--data-dir")):
        if value is None:
            continue
        for p in value.split(os.pathsep):
            if not os.path.isdir(p):
                raise LlmgenError(f"{what} {p!r} is not a folder")
        os.environ[var] = os.pathsep.join(os.path.abspath(p) for p in value.split(os.pathsep))


def print_results(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{out['model']} · {out['backend']['backend']}")
    for col in ("task", "metric", "value", "± stderr", "95% CI", "n"):
        table.add_column(col, justify="right" if col not in ("task", "metric") else "left")
    for task, metrics in out["results"].items():
        for m, v in metrics.items():
            u = out["uncertainty"][task].get(m)
            stderr, ci = (f"{u['stderr']:.4f}", f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}]") if u else ("-", "-")
            table.add_row(task, m, f"{v:.4g}", stderr, ci, str(out["n_samples"][task]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: Annotated[str, typer.Option(help="'default', a local folder, a .gguf file or a hub id")] = "default",
        model_args: Annotated[str | None, typer.Option(help="backend args: key=value,... or JSON (dtype, adapter, ...)")] = None,
        backend: Annotated[str, typer.Option(help="hf or vllm")] = "hf",
        tasks: Annotated[str, typer.Option(help="comma-separated task names or task files (.yaml/.jsonl)")] = "arithmetic",
        limit: Annotated[int | None, typer.Option(help="evaluate only the first N examples of each task")] = None,
        batch_size: Annotated[int, typer.Option()] = 16,
        num_samples: Annotated[int, typer.Option(help="completions per prompt (n)")] = 1,
        temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
        top_p: Annotated[float, typer.Option()] = 1.0,
        max_tokens: Annotated[int | None, typer.Option()] = None,
        seed: Annotated[int, typer.Option()] = 0,
        k: Annotated[str | None, typer.Option("--k", help="pass@k values, comma-separated (default 1,2,4..n)")] = None,
        num_fewshot: Annotated[int | None, typer.Option()] = None,
        apply_chat_template: Annotated[bool, typer.Option("--apply-chat-template")] = False,
        output_dir: Annotated[str | None, typer.Option(help="run folder for config/results/samples")] = None,
        log_samples: Annotated[bool, typer.Option("--log-samples/--no-log-samples")] = True,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write the request cache")] = False,
        formats: Annotated[int | None, typer.Option("--formats", help="evaluate in K plausible prompt formats")] = None,
        format_budget: Annotated[int | None, typer.Option("--format-budget", help="bandit evaluation budget E for --formats")] = None,
        include_path: Annotated[str | None, typer.Option("--include-path", help="folder(s) of your own lm-eval task YAMLs for lmeval:NAME tasks (os.pathsep-separated)")] = None,
        data_dir: Annotated[str | None, typer.Option("--data-dir", help="folder of local copies of hub datasets (<dir>/<hub id>/...) for catalogue and YAML tasks")] = None,
    ) -> None:
        """Evaluate a model on tasks; prints a table and writes a run folder."""
        from llmgen.evaluate import EvalConfig, run_eval

        set_task_sources(include_path, data_dir)

        try:
            ks = [int(x) for x in k.split(",")] if k else None
        except ValueError:
            raise LlmgenError(f"--k must be comma-separated integers, got {k!r}") from None
        config = EvalConfig(model=model, backend=backend, tasks=[t for t in tasks.split(",") if t],
                            model_args=parse_model_args(model_args), limit=limit, batch_size=batch_size,
                            num_samples=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            seed=seed, ks=ks, num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
                            output_dir=output_dir, log_samples=log_samples, cache=None if no_cache else "auto")
        if backend == "hf":
            config.model_args.setdefault("batch_size", batch_size)
        if formats is not None:
            from llmgen.format_eval import run_format_eval

            run_format_eval(config, num_formats=formats, budget=format_budget)
            if output_dir:
                typer.echo(f"wrote {output_dir}/results.json")
            return
        out = run_eval(config)
        print_results(out)
        if output_dir:
            typer.echo(f"wrote {output_dir}/results.json")

    @app.command("tasks")
    def tasks_cmd(
        name_filter: Annotated[str | None, typer.Option("--filter", help="only tasks whose name contains this text")] = None,
        include_path: Annotated[str | None, typer.Option("--include-path", help="folder(s) of your own lm-eval task YAMLs")] = None,
    ) -> None:
        """List tasks: built-in, the datasets catalogue, and lm-eval's (when the lmeval extra is installed)."""
        from rich.console import Console
        from rich.table import Table

        from llmgen.lmeval import available, list_lmeval_tasks
        from llmgen.tasks import catalogue, get_task, list_tasks

        set_task_sources(include_path, None)
        match = (lambda n: name_filter.lower() in n.lower()) if name_filter else (lambda n: True)
        table = Table(title="llmgen tasks")
        for col in ("task", "source", "type", "metrics", "description"):
            table.add_column(col, no_wrap=col == "task", overflow="fold")
        for name in filter(match, list_tasks()):
            t = get_task(name)
            table.add_row(name, "built-in", t.output_type, ", ".join(t.metrics), t.description)
        for name, (_, spec) in catalogue().items():
            if match(name):
                ds = spec.get("dataset", {})
                hub = ds.get("path", "") + (f" ({ds['name']})" if ds.get("name") else "") if isinstance(ds, dict) else str(ds)
                table.add_row(name, f"catalogue: {hub}", spec.get("output_type", "generate"),
                              ", ".join(spec.get("metrics") or [spec.get("metric", "")]).strip(", "), spec.get("description", ""))
        if available() and name_filter:
            for name in list_lmeval_tasks(name_filter):
                table.add_row(name, "lm-eval", "", "", "")
        elif available():
            table.caption = f"and {len(list_lmeval_tasks())} lm-eval tasks (lmeval:NAME): list them with --filter TEXT"
        else:
            table.caption = "lm-eval tasks: pip install 'llmgen[lmeval]'"
        Console().print(table)

    @app.command("models")
    def models_cmd() -> None:
        """Show what 'default' resolves to and where the cache lives."""
        from llmgen.models import DEFAULT_ALIASES, cache_dir, default_model_path, embedded_gguf_path

        typer.echo(f"aliases: {', '.join(DEFAULT_ALIASES)}")
        typer.echo(f"embedded GGUF: {embedded_gguf_path()}")
        typer.echo(f"default resolves to: {default_model_path()}")
        typer.echo(f"cache directory: {cache_dir()} (set LLMGEN_CACHE to move it)")
