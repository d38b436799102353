"""What ``llmgen eval`` runs (``EvalConfig``) and the settings derived from it per task (sampling,
pass@k values, request chunks): a low module, so the task families (an lm-eval task reads its
settings) and the runner (``llmgen.evaluate``, which re-exports these names) both import it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from llmgen.backends import SamplingConfig, backend_class
from llmgen.config import EvalSettings
from llmgen.errors import LlmgenError
from llmgen.evals.passk import default_ks

if TYPE_CHECKING:
    from llmgen.tasks.base import Task

#: ``llmgen eval``'s flag for each :class:`EvalConfig` field whose flag is not ``--<field-with-dashes>``
#: (``cli/core.py`` declares them; ``tests/cli/test_cli.py`` checks every field has one).
RENAMED_FLAGS = {"max_new_tokens": "--max-tokens", "ks": "--k", "cache": "--no-cache"}
#: :class:`EvalSettings` fields ``llmgen eval`` has no flag for, each with the reason (none today:
#: every setting applies to it; the test refuses a field that is neither a flag nor listed here)
NO_FLAG: dict[str, str] = {}


def flag_of(name: str) -> str:
    """The ``llmgen eval`` flag that sets field ``name``: error lines name what the user typed."""
    return RENAMED_FLAGS.get(name, "--" + name.replace("_", "-"))


@dataclass
class EvalConfig(EvalSettings):
    """What ``llmgen eval`` runs: the shared evaluation settings (:class:`EvalSettings`, the
    ``eval:`` section of every recipe: backend, max_new_tokens, num_samples, temperature, top_p,
    limit, batch_size, each defined there once) plus what to evaluate and where to write it.
    ``model_args`` go to the backend (dtype, adapter, ...)."""

    model: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["arithmetic"])
    model_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    fewshot_seed: int = 1234  # lm-eval's few-shot sampler seed (its CLI default) for lmeval: tasks and --formats
    ks: list[int] | None = None
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    output_dir: str | None = None
    log_samples: bool = True
    cache: str | None = "auto"  # "auto" → <cache_dir>/requests.sqlite; None → no cache

    @classmethod
    def from_settings(cls, settings: EvalSettings, **rest: Any) -> EvalConfig:
        """A runner config from a recipe's ``eval:`` section plus ``rest`` (model, seed, ...; a
        settings field named in ``rest`` wins), so no recipe copies the settings field by field."""
        return cls(**{**{f.name: getattr(settings, f.name) for f in fields(EvalSettings)}, **rest})

    def validate(self) -> None:
        """The settings' checks against every backend ``llmgen eval`` knows (openai too), each error
        naming its flag; ``max_new_tokens`` None is each task's own budget."""
        backend_class(self.backend)  # unknown: one line listing the registered backends
        self.check_values(flag_of)
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise LlmgenError(f"--num-fewshot must be >= 0, got {self.num_fewshot}")


def sampling_for(task: Task, config: EvalConfig) -> SamplingConfig:
    return SamplingConfig(n=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                          max_tokens=config.max_new_tokens or task.max_tokens, stop=task.stop, seed=config.seed)


def request_chunk(config: EvalConfig) -> int:
    """Requests per backend call, so the cache commits (and progress moves) every few batches:
    four batches of ``--batch-size``, at least 64 (the backend's own batch caps it too)."""
    return max(64, 4 * (config.batch_size or 0))


def ks_for(config: EvalConfig) -> list[int]:
    ks = config.ks or default_ks(config.num_samples)
    for k in ks:
        if k > config.num_samples:
            raise LlmgenError(f"pass@{k} needs at least {k} samples per problem, got --num-samples {config.num_samples}")
        if k < 1:
            raise LlmgenError(f"pass@k needs k >= 1, got {k}")
    return sorted(set(ks))
