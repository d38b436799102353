"""The committed paper-scale configs (``recipes/<paper>/configs/gpu.yaml``) reproduce the reference
code's run settings, item by item: each is loaded as the recipe loads it and checked against a table
of the references' values kept here (the source of each value beside it)."""

from __future__ import annotations

import pytest

from llmgen.config import load_config, recipe_config

# (recipe, config class path, {dotted key: (reference value, where the reference sets it)})
TABLES = {
    "format_spread": ("llmgen.recipes.format_spread:FormatSpreadConfig", {
        "shots": (5, "run_evals.sh: 5-shot"),
        "metric": ("exact_prefix_matching", "run_evals.sh: --evaluation_metric exact_prefix_matching"),
        "num_formats": (321, "run_evals.sh / README: 320 formats + the original"),
        "mode": ("thompson", "README: --evaluation_type format_spread (Thompson sampling)"),
        "budget": (40000, "README: --budget_format_spread 40000"),
        "batch": (20, "README: --batch_size_format_spread 20"),
        "eval.limit": (1000, "README: --num_samples 1000"),
        "eval.max_new_tokens": (10, "utils.py: generation max_tokens=10"),
        "ranking_classes": ("batch", "utils.py solve_with_rank_based_scoring: gold labels of the batch"),
        "normalize": (False, "utils.py: summed log-probabilities"),
    }),
    "confidence_limiting": ("llmgen.recipes.confidence_limiting:ConfidenceLimitingConfig", {
        "train.epochs": (6, "README: --num_train_epochs 6"),
        "train.lr": (2e-5, "README: --learning_rate 2e-5"),
        "train.weight_decay": (0.0, "arg_parser.py: --weight_decay default 0.0"),
        "dco_threshold": (0.1, "README / arg_parser.py: --threshold 0.1"),
        "dco_normalization": ("example_mean", "NCO.py custom_loss_function1(...).mean(): F·NLL/|y| over the batch"),
        "refill": (True, "train.py: filter_fn on each global batch, unused_indices refill"),
        "grading": ("boxed", "nbs/eval.ipynb: remove_boxed(last_boxed_only_string), normalize_final_answer"),
    }),
    "hyperfitting": ("llmgen.recipes.hyperfitting:HyperfittingConfig", {
        "train.weight_decay": (0.01, "start_hyperfitting.py: AdamW(model.parameters(), lr) (default 0.01)"),
        "train.max_grad_norm": (None, "training.py: no clip_grad_norm_"),
        "train.batch_size": (8, "start_hyperfitting.py: --batch_size 8"),
        "seq_len": (256, "start_hyperfitting.py: --seq_len 256"),
        "prompt_len": (32, "start_hyperfitting.py: --gen_context_len 32"),
        "eval.max_new_tokens": (224, "validation.py: max_length = seq_len (256 - 32 new tokens)"),
        "ttr_window": (96, "start_hyperfitting.py: --gen_ttr_window_size 96"),
        "ttr_eos": ("pad", "validation.py: generate(pad_token_id=eos), window over the padded sequence"),
        "split": ("document", "data.py tokenize_hyperfitting_dataset: one sequence per document"),
    }),
}


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("recipe", sorted(TABLES))
def test_gpu_config_reproduces_the_reference_settings(recipe):
    import importlib

    where, table = TABLES[recipe]
    module, cls = where.split(":")
    config = load_config(getattr(importlib.import_module(module), cls), recipe_config(recipe, "gpu"), {})
    if hasattr(config, "validate"):  # the recipe's own checks accept it
        config.validate()
    wrong = {k: (_get(config, k), v) for k, (v, _) in table.items() if _get(config, k) != v}
    assert not wrong, f"{recipe} gpu.yaml differs from the reference (key: (config, reference)): {wrong}"
