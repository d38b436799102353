"""The backend registry: one place knows each backend's name, arguments and how to build it; a
backend registered from outside the package (a ``--plugin`` file) runs through ``llmgen eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmgen.backends import BACKENDS, backend_class, backend_names, backend_on_model
from llmgen.config import EvalSettings
from llmgen.errors import LlmgenError
from llmgen.evaluate import backend_arg_names, check_backend_args

LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]

PLUGIN = '''
"""A lab's backend: the hf backend with a tag after every completion (deterministic, one module)."""
from llmgen.backends import register_backend
from llmgen.backends.hf import HFBackend


@register_backend("tagged-hf")
class TaggedHF(HFBackend):
    def __init__(self, model, dtype="float32", tag="<end>"):
        super().__init__(model, dtype=dtype)
        self.tag = tag

    def _generate_tokens(self, requests):
        outs = super()._generate_tokens(requests)
        for comps in outs:
            for c in comps:
                c.text += self.tag
        return outs
'''


def test_every_built_in_backend_is_found_by_walking_the_package():
    assert {"hf", "vllm", "openai", "openai-chat", "openai-completions"} <= set(backend_names())
    for name in ("hf", "openai", "openai-chat"):
        assert backend_class(name).name == name and BACKENDS.get(name) is backend_class(name)
    with pytest.raises(LlmgenError, match=r"unknown backend 'nope' \(known: hf, openai, openai-chat"):
        backend_class("nope")
    with pytest.raises(LlmgenError, match=r"unknown eval.backend 'nope' \(known: hf, openai"):
        EvalSettings(backend="nope").validate()


def test_arguments_come_from_each_backend_class():
    assert {"adapter", "dtype", "batch_size", "max_length"} <= backend_arg_names("hf")
    assert {"base_url", "api_key_env", "timeout", "served_model"} <= backend_arg_names("openai-chat")
    assert "enforce_eager" in backend_arg_names("vllm")  # vllm.EngineArgs fields, not treated as hf
    assert "enforce_eager" not in backend_arg_names("openai")  # no longer "every non-hf backend is vLLM"
    with pytest.raises(LlmgenError, match="the openai backend has no argument 'enforce_eager'"):
        check_backend_args("openai", {"enforce_eager": True})
    with pytest.raises(LlmgenError, match="--base-url needs a server backend"):
        check_backend_args("hf", {"base_url": "http://x/v1"})


def test_api_key_in_model_args_is_refused_in_one_line():
    with pytest.raises(LlmgenError, match=r"api_key=\.\.\. would be written to config.json.*--api-key-env") as e:
        check_backend_args("openai-chat", {"api_key": "sk-secret"})
    assert "sk-secret" not in str(e.value) and "\n" not in str(e.value)


def test_backend_on_model_scores_the_object_or_saves_merged_weights(tmp_path, tiny_model_dir):
    """hf: the object itself (no folder); any other: weights saved, loaded in the model's dtype."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmgen.backends.base import Backend
    from llmgen.models import load_model

    model, tok = load_model(tiny_model_dir, dtype="float32", device="cpu")
    hf = backend_on_model("hf", model, tok, tmp_path / "unused", label="in-memory:step0")
    assert hf.model is model and hf.model_name == "in-memory:step0" and hf.dtype == "float32"
    assert not (tmp_path / "unused").exists()

    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    seen = {}

    class FromDisk(Backend):  # records what an engine that loads from disk is given
        def __init__(self, model, dtype="float32"):
            seen.update(model=model, dtype=dtype)

        tokenizer = max_length = None

        def _generate_tokens(self, requests): ...

        def loglikelihood_tokens(self, requests): ...

    FromDisk.from_model(lora.to(torch.bfloat16), tok, tmp_path / "saved")
    assert seen == {"model": str(tmp_path / "saved"), "dtype": "bfloat16"}
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert not (tmp_path / "saved" / "adapter_config.json").exists() and saved["model_type"] == "llama"  # merged


def test_a_plugin_backend_runs_through_the_cli(tmp_path, tiny_model_dir):
    """A backend from outside the package, named on the command line: its argument is accepted, an
    unknown one refused, and its answers are the hf backend's plus its tag."""
    plugin = tmp_path / "lab_backend.py"
    plugin.write_text(PLUGIN)

    def run(backend: str, out: str, *extra: str):
        return subprocess.run([*LLMGEN, "--plugin", str(plugin), "eval", "--backend", backend, "--model",
                               tiny_model_dir, "--tasks", "arithmetic", "--limit", "3", "--max-tokens", "4",
                               "--no-cache", "--output-dir", str(tmp_path / out), *extra],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    tagged = run("tagged-hf", "tagged", "--model-args", "tag=#42")
    plain = run("hf", "plain")
    assert tagged.returncode == 0 and plain.returncode == 0, tagged.stderr[-2000:] + plain.stderr[-2000:]
    res = json.loads((tmp_path / "tagged" / "results.json").read_text())
    assert res["backend"]["backend"] == "tagged-hf"
    rows = [json.loads(line) for line in (tmp_path / "tagged" / "samples.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "plain" / "samples.jsonl").read_text().splitlines()]
    assert [r["responses"] for r in rows] == [[x + "#42" for x in r["responses"]] for r in ref]

    bad = run("tagged-hf", "bad", "--model-args", "colour=red")
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and errors == ["error: --model-args: the tagged-hf backend has no argument 'colour' "
                                              "(known: dtype, tag)"]
    assert not Path(tmp_path / "bad").exists()


def test_sharding_asks_the_registry(monkeypatch):
    from llmgen import sharding

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LlmgenError, match="runs the hf or openai backends, not vllm"):
        sharding.start("vllm")
    assert [n for n in backend_names() if not backend_class(n).SHARDABLE] == ["vllm"]
