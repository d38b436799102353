"""Core commands: ``llmgen eval``, ``llmgen tasks``, ``llmgen models``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from llmgen.display import print_table
from llmgen.errors import LlmgenError


def parse_model_args(text: str | None) -> dict:
    """``key=value,key=value`` (lm-eval style) or a JSON object."""
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise LlmgenError(f"--model-args is not valid JSON: {e.msg}") from None
        if not isinstance(parsed, dict):
            raise LlmgenError("--model-args JSON must be an object")
        return parsed
    out: dict = {}
    for part in text.split(","):
        if "=" not in part or not part.split("=", 1)[0].strip():
            raise LlmgenError(f"--model-args entry {part!r} is not key=value")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v, parse_constant=_no_constant)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def _no_constant(name: str) -> None:
    raise LlmgenError(f"--model-args: {name} is not a number JSON can hold")


def set_task_sources(include_path: str | None, data_dir: str | None) -> None:
    """``--include-path`` / ``--data-dir`` → the environment variables task loading reads (so that
    validation, every rank and every later process see the same sources)."""
    import os

    from llmgen.tasks.hub import DATA_DIR_ENV
    from llmgen.tasks.lmeval import INCLUDE_ENV

    for value, var, what in ((include_path, INCLUDE_ENV, "--include-path"), (data_dir, DATA_DIR_ENV, "--data-dir")):
        if value is None:
            continue
        for p in value.split(os.pathsep):
            if not os.path.isdir(p):
                raise LlmgenError(f"{what} {p!r} is not a folder")
        os.environ[var] = os.pathsep.join(os.path.abspath(p) for p in value.split(os.pathsep))


def print_results(out: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{out['model']} · {out['backend']['backend']}")
    for col in ("task", "metric", "value", "± stderr", "95% CI", "n"):
        table.add_column(col, justify="right" if col not in ("task", "metric") else "left")
    for task, metrics in out["results"].items():
        for m, v in metrics.items():
            u = out["uncertainty"][task].get(m)
            stderr, ci = (f"{u['stderr']:.4f}", f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}]") if u else ("-", "-")
            table.add_row(task, m, f"{v:.4g}", stderr, ci, str(out["n_samples"][task]))
    print_table(table)


def plain_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns padded to their widest cell, the last one unpadded: nothing is ever
    cut or wrapped at the terminal's width (task names are what users copy), and it greps well."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]).rstrip()
                     for r in rows)


def default_eval_dir(task_names: list[str]) -> str:
    """``runs/<tasks>-<timestamp>`` for a run given no ``--output-dir`` (task files by their stem)."""
    from pathlib import Path

    from llmgen.io import default_run_dir

    stems = [Path(t).stem if t.endswith((".yaml", ".yml", ".jsonl")) else t for t in task_names]
    return str(default_run_dir("+".join(stems[:3]) + ("+more" if len(stems) > 3 else "")))


def register(app: typer.Typer) -> None:
    from llmgen.config import EvalSettings as S  # the settings' defaults: one place (EvalConfig extends it)

    @app.command("eval")
    def eval_cmd(
        model: Annotated[str, typer.Option(help="'default', a local folder, a .gguf file or a hub id")] = "default",
        model_args: Annotated[str | None, typer.Option(help="backend args: key=value,... or JSON (dtype, adapter, ...)")] = None,
        backend: Annotated[str, typer.Option(help="hf, vllm, or a server (needs --base-url): openai (token ids), "
                                                  "openai-chat, openai-completions")] = S.backend,
        base_url: Annotated[str | None, typer.Option(help="server backends: server URL(s), comma-separated")] = None,
        api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="server backends: the environment "
                                                        "variable holding the API key (default OPENAI_API_KEY)")] = None,
        tasks: Annotated[str, typer.Option(help="comma-separated task names or task files (.yaml/.jsonl)")] = "arithmetic",
        limit: Annotated[int | None, typer.Option(help="evaluate only the first N examples of each task")] = S.limit,
        batch_size: Annotated[int | None, typer.Option(help="prompts per forward pass (hf backend; default: the "
                                                              "backend's, 16)")] = S.batch_size,
        num_samples: Annotated[int, typer.Option(help="completions per prompt (n)")] = S.num_samples,
        temperature: Annotated[float, typer.Option(help="0 = greedy")] = S.temperature,
        top_p: Annotated[float, typer.Option(help="nucleus sampling: keep the top tokens of this total probability")] = S.top_p,
        max_tokens: Annotated[int | None, typer.Option(help="most tokens generated per completion (default: the "
                                                            "task's)")] = S.max_new_tokens,
        seed: Annotated[int, typer.Option(help="sampling and bootstrap seed (lm-eval tasks: also python's random "
                                                "seed, lm-eval's default 0); same seed, same results")] = 0,
        fewshot_seed: Annotated[int, typer.Option("--fewshot-seed", help="lm-eval tasks: the few-shot sampler's "
                                                  "seed (default: lm-eval's, 1234)")] = 1234,
        k: Annotated[str | None, typer.Option("--k", help="pass@k values, comma-separated (default 1,2,4..n)")] = None,
        num_fewshot: Annotated[int | None, typer.Option(help="examples shown before each prompt (default: the task's)")] = None,
        apply_chat_template: Annotated[bool, typer.Option("--apply-chat-template",
                                                          help="wrap each prompt in the model's chat template")] = False,
        output_dir: Annotated[str | None, typer.Option(help="run folder for config/results/samples "
                                                            "(default: runs/<task>-<timestamp>)")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace the run in a non-empty --output-dir")] = False,
        log_samples: Annotated[bool, typer.Option("--log-samples/--no-log-samples",
                                                  help="write samples.jsonl (prompt, responses, per-example metrics)")] = True,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write the request cache")] = False,
        formats: Annotated[int | None, typer.Option("--formats", help="evaluate in K plausible prompt formats")] = None,
        format_budget: Annotated[int | None, typer.Option("--format-budget", help="bandit evaluation budget E for --formats")] = None,
        include_path: Annotated[str | None, typer.Option("--include-path", help="folder(s) of your own lm-eval task YAMLs for lmeval:NAME tasks (os.pathsep-separated)")] = None,
        data_dir: Annotated[str | None, typer.Option("--data-dir", help="folder of local copies of hub datasets (<dir>/<hub id>/...) for catalogue and YAML tasks")] = None,
    ) -> None:
        """Evaluate a model on tasks; prints a table and writes a run folder."""
        from llmgen.evaluate import EvalConfig, run_eval, validate
        from llmgen.io import RunFolder

        set_task_sources(include_path, data_dir)

        try:
            ks = [int(x) for x in k.split(",")] if k else None
        except ValueError:
            raise LlmgenError(f"--k must be comma-separated integers, got {k!r}") from None
        task_names = [t.strip() for t in tasks.split(",") if t.strip()]
        run_dir = output_dir or default_eval_dir(task_names)
        config = EvalConfig(model=model, backend=backend, tasks=task_names,
                            model_args=parse_model_args(model_args), limit=limit, batch_size=batch_size,
                            num_samples=num_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_tokens,
                            seed=seed, fewshot_seed=fewshot_seed, ks=ks, num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
                            output_dir=run_dir, log_samples=log_samples, cache=None if no_cache else "auto")
        if base_url is not None:  # a backend without a base_url argument refuses it (check_backend_args)
            config.model_args["base_url"] = base_url
        if api_key_env is not None:  # the variable's name, never the key: config.json may hold it
            config.model_args["api_key_env"] = api_key_env
        started = time.time()
        checked = validate(config)  # every check, and the tasks loaded once, before the run folder is taken
        # A finished run (results.json) is not replaced without --overwrite; an unfinished one (killed)
        # is simply rerun: the request cache makes that a resume. The folder is held (locked) until
        # the run ends, so a second run into it is refused.
        with RunFolder(run_dir, overwrite=overwrite, run_files=("results.json",)):
            if formats is not None:
                from llmgen.prompts.format_eval import run_format_eval

                run_format_eval(config, num_formats=formats, budget=format_budget, tasks=checked)
                typer.echo(f"wrote {run_dir}/results.json", err=True)
                return
            out = run_eval(config, tasks=checked, started=started)
        from llmgen.sharding import rank

        if rank() != 0:  # under torchrun every rank holds the results; one prints them
            return
        print_results(out)
        typer.echo(f"wrote {run_dir}/results.json", err=True)

    @app.command("tasks")
    def tasks_cmd(
        name_filter: Annotated[str | None, typer.Option("--filter", help="only tasks whose name contains this text")] = None,
        include_path: Annotated[str | None, typer.Option("--include-path", help="folder(s) of your own lm-eval task YAMLs")] = None,
    ) -> None:
        """List tasks: built-in, the datasets catalogue, and lm-eval's (when the lmeval extra is installed).

        A plain aligned table: names are never cut at the terminal's width (they are what users copy)."""
        from llmgen.tasks import TASKS, catalogue, get_task, list_tasks
        from llmgen.tasks.lmeval import available, list_lmeval_tasks

        set_task_sources(include_path, None)
        match = (lambda n: name_filter.lower() in n.lower()) if name_filter else (lambda n: True)
        rows = [("task", "source", "type", "metrics", "description")]
        for name in filter(match, list_tasks()):
            # a factory with a ``listing`` is described without being built (building may write data)
            listing = getattr(TASKS.get(name), "listing", None)
            if listing is None:
                t = get_task(name)
                listing = (t.output_type, t.metrics, t.description)
            kind, metrics, description = listing
            rows.append((name, "built-in", kind, ", ".join(metrics), description))
        for name, (_, spec) in catalogue().items():
            if match(name):
                ds = spec.get("dataset", {})
                hub = ds.get("path", "") + (f" ({ds['name']})" if ds.get("name") else "") if isinstance(ds, dict) else str(ds)
                rows.append((name, f"catalogue: {hub}", spec.get("output_type", "generate"),
                             ", ".join(spec.get("metrics") or [spec.get("metric", "")]).strip(", "), spec.get("description", "")))
        caption = ""
        if available() and name_filter:
            rows += [(name, "lm-eval", "", "", "") for name in list_lmeval_tasks(name_filter)]
        elif available():
            caption = f"and {len(list_lmeval_tasks())} lm-eval tasks (lmeval:NAME): list them with --filter TEXT"
        else:
            caption = "lm-eval tasks: pip install 'llmgen[lmeval]'"
        typer.echo(plain_table(rows))
        if caption:
            typer.echo(caption)

    @app.command("models")
    def models_cmd() -> None:
        """Show what 'default' resolves to and where the cache lives (read-only: converts nothing)."""
        from llmgen.models import (
            DEFAULT_ALIASES,
            cache_dir,
            default_model_target,
            embedded_gguf_path,
            is_converted,
        )

        target = default_model_target()
        state = "" if is_converted(target) else " (not converted yet: converted there on first use, about 20 s)"
        typer.echo(f"aliases: {', '.join(DEFAULT_ALIASES)}")
        typer.echo(f"embedded GGUF: {embedded_gguf_path()}")
        typer.echo(f"default resolves to: {target}{state}")
        typer.echo(f"cache directory: {cache_dir()} (set with --cache-dir or LLMGEN_CACHE)")
