"""Unlearning methods registered from outside the package run through ``llmgen npo-unlearning``."""

from __future__ import annotations

import json
import textwrap

import pytest

from llmgen.recipes.npo_unlearning import make_retain_logs
from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu

PLUGIN = textwrap.dedent('''
    """A lab's own unlearning methods, registered from outside llmgen."""
    from llmgen.training.losses import model_inputs, register_loss, token_logprobs
    from llmgen.training.losses.unlearning import ga_term, register_method, token_mean_logprob, unlearning_loss


    @register_method("lab_scaled_ga", {"gamma": 0.5})
    def lab_scaled_ga(model, batch, state):
        """GA with its own default weight."""
        return unlearning_loss(model, batch, state, ga_term)


    @register_loss("lab_plain_ga", streams=("forget",))
    def lab_plain_ga(model, batch, state):
        """A plain registered loss reading the forget stream: a method with undeclared arguments."""
        lp, mask = token_logprobs(model, *model_inputs(batch["forget"]))
        return state.arg("scale", 1.0) * token_mean_logprob(lp, mask), {}
''')


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory):
    return str(write_synthetic_tofu(tmp_path_factory.mktemp("tofu"), SyntheticTofuConfig(n_authors=3, retain_eval_size=3)))


def test_a_plugin_method_runs_through_the_cli(tiny_model_dir, tofu_dir, tmp_path):
    from llmgen.cli.main import main

    plugin = tmp_path / "lab_methods.py"
    plugin.write_text(PLUGIN)
    logs = make_retain_logs(tiny_model_dir, tofu_dir, "forget10", str(tmp_path / "logs.json"), eval_limit=2,
                            max_new_tokens=2)
    out = tmp_path / "run"
    main(["--plugin", str(plugin), "npo-unlearning", "--model", tiny_model_dir, "--data", tofu_dir,
          "--method", "ga,lab_scaled_ga,lab_plain_ga", "--retain-logs", logs, "--eval-limit", "2",
          "--max-new-tokens", "2", "method_args.lab_scaled_ga.gamma=0.25", "method_args.lab_plain_ga.scale=0.5",
          "train.max_steps=1", "train.batch_size=4", "train.grad_accum=1", "train.lora_r=4", "warmup_epochs=0",
          "-o", str(out)])
    saved = json.loads((out / "results.json").read_text())
    methods = saved["methods"]
    assert list(methods) == ["ga", "lab_scaled_ga", "lab_plain_ga"]
    # the plugin method's own defaults, overridden for it alone; GA keeps its γ 1
    assert methods["lab_scaled_ga"]["args"] == {"gamma": 0.25} and methods["ga"]["args"]["gamma"] == 1.0
    assert methods["lab_plain_ga"]["args"] == {"scale": 0.5}
    # first step: the same model and forget batch, so the losses differ by the weights alone
    ga0 = methods["ga"]["losses"][0]
    assert methods["lab_scaled_ga"]["losses"][0] == pytest.approx(0.25 * ga0, rel=1e-4)
    assert methods["lab_plain_ga"]["losses"][0] == pytest.approx(0.5 * ga0, rel=1e-4)


def test_unknown_method_lists_the_registered_ones():
    from llmgen.errors import LlmgenError
    from llmgen.training.losses.unlearning import check_method

    with pytest.raises(LlmgenError, match=r"unknown unlearning method 'npx' \(known: ") as e:
        check_method("npx")
    for name in ("ga", "gd", "kl", "npo", "npo_rt", "npo_kl", "idkdpo", "idkdpo_rt", "simnpo", "simnpo_rt"):
        assert f" {name}," in str(e.value) or f" {name};" in str(e.value)
