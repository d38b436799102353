"""llmgen.config: YAML/JSON configs + dotted key=value overrides, checked against the dataclass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from llmgen.config import EvalSettings, check_fixed, config_keys, dump_config, load_config
from llmgen.errors import LlmgenError
from llmgen.training.config import TrainConfig


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int | None = None
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    model: str = "m"
    flag: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    train: Inner = field(default_factory=lambda: Inner(lr=0.5))
    weights: dict[str, float] | None = None


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file():
    assert load_config(Outer) == Outer()


def test_nested_partial_mapping_keeps_the_section_defaults(tmp_path):
    cfg = load_config(Outer, write(tmp_path / "c.yaml", "model: x\ntrain:\n  steps: 3\n"))
    assert cfg.model == "x" and cfg.train.steps == 3
    assert cfg.train.lr == 0.5  # the recipe's default for its section, not Inner()'s 1e-3


def test_overrides_dotted_keys_and_yaml_values(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  lr: 1.0e-4\n")
    cfg = load_config(Outer, path, ["train.lr=1e-5", "flag=true", "train.names=[x, y]", "train.steps=null",
                                    "betas=[0.8, 0.99]", "weights={a: 2}"])
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)  # "1e-5" is a string to PyYAML
    assert cfg.flag is True and cfg.train.names == ["x", "y"] and cfg.train.steps is None
    assert cfg.betas == (0.8, 0.99) and cfg.weights == {"a": 2.0}


def test_override_wins_over_file_and_comma_list(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  names: [p]\n  steps: 2\n")
    cfg = load_config(Outer, path, ["train.names=u,v", "train.steps=7"])
    assert cfg.train.names == ["u", "v"] and cfg.train.steps == 7


def test_string_fields_keep_the_raw_text():
    cfg = load_config(Outer, None, ["model=Q: {question}"])
    assert cfg.model == "Q: {question}"
    assert load_config(Outer, None, ["model=123"]).model == "123"


def test_mapping_overrides_from_python():
    cfg = load_config(Outer, None, {"train.lr": 2, "flag": True})
    assert cfg.train.lr == 2.0 and cfg.flag is True


@pytest.mark.parametrize("override, message", [
    (["train.steps=abc"], "train.steps: expected int | None, got 'abc'"),
    (["flag=3"], "flag: expected bool, got 3"),
    (["betas=[1, 2, 3]"], "betas: expected 2 values"),
    (["train.names=[1]"], "train.names[0]: expected str, got 1"),
])
def test_bad_type_is_one_error_naming_the_key(override, message):
    with pytest.raises(LlmgenError) as e:
        load_config(Outer, None, override)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_lists_the_known_ones_and_suggests(tmp_path):
    with pytest.raises(LlmgenError) as e:
        load_config(Outer, None, ["train.lrr=1"])
    assert str(e.value) == ("unknown config key 'train.lrr'; did you mean 'train.lr'? "
                            "(known in 'train': lr, steps, names)")
    with pytest.raises(LlmgenError) as e:  # a section's key given at the top level
        load_config(Outer, write(tmp_path / "c.yaml", "lr: 1\n"))
    assert "did you mean 'train.lr'?" in str(e.value) and "known: model, flag, betas, train, weights" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(LlmgenError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    with pytest.raises(LlmgenError, match="not valid YAML"):
        load_config(Outer, write(tmp_path / "bad.yaml", "a: [1\n"))
    with pytest.raises(LlmgenError, match="holds a mapping"):
        load_config(Outer, write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(LlmgenError, match="KEY=VALUE"):
        load_config(Outer, None, ["model"])


def test_dump_round_trips_through_json(tmp_path):
    cfg = load_config(Outer, None, ["train.steps=4", "weights={b: 1.5}", "betas=[0.1, 0.2]"])
    data = dump_config(cfg)
    assert data["betas"] == [0.1, 0.2] and data["train"] == {"lr": 0.5, "steps": 4, "names": ["a"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert load_config(Outer, path) == cfg


def test_config_keys_expand_sections_with_their_defaults():
    keys = {k: (t, d) for k, t, d in config_keys(Outer)}
    assert keys["train.lr"] == ("float", 0.5) and keys["train.steps"] == ("int | None", None)
    assert "train" not in keys and keys["flag"] == ("bool", False)


@dataclass
class Fixed(Outer):
    FIXED_KEYS: ClassVar[tuple[str, ...]] = ("train.steps", "flag")


def test_check_fixed_refuses_changed_fields():
    check_fixed(load_config(Fixed, None, ["train.lr=2", "model=x"]))
    with pytest.raises(LlmgenError) as e:
        check_fixed(load_config(Fixed, None, ["train.steps=3"]))
    assert str(e.value) == ("train.steps: set by the Fixed recipe itself (or not used by it); "
                            "remove it from the config")


def test_train_config_types_load():
    cfg = load_config(TrainConfig, None, ["adam_betas=[0.9, 0.95]", "max_grad_norm=null", "lora_targets=all-linear",
                                          "data={forget: a.jsonl, retain: b.jsonl}", "report_to=[tensorboard]"])
    assert cfg.adam_betas == (0.9, 0.95) and cfg.max_grad_norm is None and cfg.lora_targets == "all-linear"
    assert cfg.data == {"forget": "a.jsonl", "retain": "b.jsonl"} and cfg.report_to == ["tensorboard"]
    assert load_config(TrainConfig, None, ["lora_targets=[q_proj, v_proj]"]).lora_targets == ["q_proj", "v_proj"]
    assert load_config(TrainConfig, None, ["data=x.jsonl"]).data == "x.jsonl"


def test_eval_settings_validate():
    EvalSettings().validate()
    assert EvalSettings().max_new_tokens is None  # each task's own budget
    with pytest.raises(LlmgenError, match="eval.max_new_tokens must be a number here"):
        EvalSettings().validate(task_budget=False)
    with pytest.raises(LlmgenError, match="eval.top_p must be in"):
        load_config(EvalSettings, None, ["top_p=0"]).validate()
    with pytest.raises(LlmgenError, match="unknown eval.backend 'tpu'"):
        load_config(EvalSettings, None, ["backend=tpu"]).validate()


def test_dotted_keys_into_dict_fields_and_a_base():
    cfg = load_config(TrainConfig, None, ["loss_args.beta=0.1", "loss_args.retain=kl"])
    assert cfg.loss_args == {"beta": 0.1, "retain": "kl"}
    weights = load_config(Outer, None, ["weights.code=3"]).weights
    assert weights == {"code": 3.0} and isinstance(weights["code"], float)
    base = Outer(model="preset", train=Inner(lr=9.0, steps=1))
    cfg = load_config(Outer, None, ["train.steps=2"], base=base)
    assert (cfg.model, cfg.train.lr, cfg.train.steps) == ("preset", 9.0, 2)


@dataclass
class Derived:
    width: int = 2
    height: int | None = None  # default: the width

    def __post_init__(self) -> None:
        self.height = self.height if self.height is not None else self.width


@dataclass
class HasDerived:
    shape: Derived = field(default_factory=lambda: Derived(width=5))


def test_changing_a_section_recomputes_its_derived_fields():
    assert load_config(HasDerived).shape == Derived(5, 5)
    assert load_config(HasDerived, None, ["shape.width=3"]).shape == Derived(3, 3)
    assert load_config(HasDerived, None, ["shape.width=3", "shape.height=7"]).shape == Derived(3, 7)


# --- the committed configs (recipes/<paper>/configs/*.yaml) ---------------------------------------

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CONFIG_CLASSES = {
    "npo_unlearning": "llmgen.recipes.npo_unlearning:UnlearnConfig",
    "confidence_limiting": "llmgen.recipes.confidence_limiting:ConfidenceLimitingConfig",
    "hyperfitting": "llmgen.recipes.hyperfitting:HyperfittingConfig",
    "format_spread": "llmgen.recipes.format_spread:FormatSpreadConfig",
    "instruction_diversity": "llmgen.recipes.instruction_diversity:SweepConfig",
}
COMMITTED = sorted(RECIPES.glob("*/configs/*.yaml"))


def _validate(paper: str, cfg) -> None:
    if paper == "format_spread":
        from llmgen.recipes.format_spread import _check

        _check(cfg)
    else:
        cfg.validate()


def test_every_recipe_has_committed_configs():
    papers = {p.parent.parent.name for p in COMMITTED}
    assert papers == set(CONFIG_CLASSES)
    assert all((RECIPES / paper / "configs" / "tiny.yaml").is_file() for paper in CONFIG_CLASSES)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_committed_config_loads_validates_and_round_trips(path, tmp_path):
    """Every committed config: only known keys, right types, valid values (no model loads), and its
    config.json (``dump_config``) loads back to the same config."""
    import importlib

    paper = path.parent.parent.name
    module, _, name = CONFIG_CLASSES[paper].partition(":")
    cls = getattr(importlib.import_module(module), name)
    cfg = load_config(cls, path)
    _validate(paper, cfg)
    assert load_config(cls, path) == cfg  # a pure function of the file
    (tmp_path / "config.json").write_text(json.dumps(dump_config(cfg)))
    assert load_config(cls, tmp_path / "config.json") == cfg


@pytest.mark.parametrize("paper", ["npo_unlearning", "confidence_limiting", "hyperfitting", "format_spread"])
def test_recipes_without_a_task_budget_refuse_a_null_max_new_tokens(paper):
    """``eval.max_new_tokens: null`` means "each task's own budget" (``llmgen eval``); a recipe
    that generates with its own number refuses it before any model loads, not mid-run."""
    import importlib

    module, _, name = CONFIG_CLASSES[paper].partition(":")
    cls = getattr(importlib.import_module(module), name)
    tiny = RECIPES / paper / "configs" / "tiny.yaml"
    _validate(paper, load_config(cls, tiny))
    with pytest.raises(LlmgenError, match="eval.max_new_tokens must be a number here"):
        _validate(paper, load_config(cls, tiny, ["eval.max_new_tokens=null"]))


def test_bench_configs_carry_the_bench_settings():
    """The figure configs hold what bench/*.py runs (spot checks of the settings each figure names)."""
    from llmgen.config import recipe_config
    from llmgen.recipes.hyperfitting import HyperfittingConfig
    from llmgen.recipes.npo_unlearning import UnlearnConfig

    hf = load_config(HyperfittingConfig, recipe_config("hyperfitting", "cpu"))
    assert (hf.num_sequences, hf.seq_len, hf.train.epochs, hf.train.lr, hf.train.batch_size) == (8, 128, 20, 1e-4, 4)
    assert (hf.num_prompts, hf.eval.max_new_tokens, hf.split, hf.citation_blocker) == (12, 96, "stream", False)
    un = load_config(UnlearnConfig, recipe_config("npo_unlearning", "bench"))
    assert (un.train.max_steps, un.train.batch_size, un.train.lr, un.train.schedule) == (60, 4, 2e-5, "constant")
    assert un.train.max_grad_norm is None and un.forget_split == "forget20" and un.synthetic.n_authors == 10
    assert (un.finetune.epochs, un.finetune.lr, un.finetune.batch_size) == (3.0, 1e-4, 8)


def test_real_run_folders_config_json_loads_back(recipe_runs):
    """The config.json two recipes wrote on the tiny model is a valid --config for them."""
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig
    from llmgen.recipes.npo_unlearning import UnlearnConfig

    for name, cls in (("passn", ConfidenceLimitingConfig), ("unlearn", UnlearnConfig)):
        path = recipe_runs[name] / "config.json"
        cfg = load_config(cls, path)
        cfg.validate()
        assert dump_config(cfg) == json.loads(path.read_text())
        assert cfg.output_dir == str(recipe_runs[name])


def test_eval_run_config_json_loads_back(tmp_path):
    """An ``llmgen eval`` run folder's config.json (``asdict`` of EvalConfig: the shared settings
    flat beside the run's own fields) loads back through the same loader as the recipes'."""
    from dataclasses import asdict

    from llmgen.evaluate import EvalConfig

    cfg = EvalConfig(model="m", tasks=["arithmetic", "sentiment"], max_new_tokens=7, batch_size=4, limit=3,
                     num_samples=2, temperature=0.5, ks=[1, 2], model_args={"dtype": "float32"}, cache=None)
    (tmp_path / "config.json").write_text(json.dumps(asdict(cfg)))
    assert load_config(EvalConfig, tmp_path / "config.json") == cfg
    assert load_config(EvalConfig, None, ["max_new_tokens=null"]).max_new_tokens is None
