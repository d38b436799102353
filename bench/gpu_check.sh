#!/usr/bin/env bash
# One-GPU check (issue 17, item 5): HF bf16 generation + loglikelihood throughput, training tokens/s and
# MFU of llmgen.training vs transformers.Trainer, for the embedded model and a random-init ~1B Llama.
# Needs torch (CUDA), transformers, peft, accelerate; no vLLM, no network. Finishes in < 8 minutes on
# one H200 (a hard timeout stops it at 7.5; each finished part is already in the JSON).
#
#   bench/gpu_check.sh MODEL_DIR [OUT.json] [--smoke]
#   MODEL_DIR: the embedded model's folder (python -c "from llmgen.models import resolve_model; print(resolve_model('default'))");
#              it lives in the cache, so copy it next to the repo to carry it to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: bench/gpu_check.sh MODEL_DIR [OUT.json] [--smoke]" >&2
  exit 2
fi
MODEL=$1
OUT=${2:-gpu_check.json}
EXTRA=("${@:3}")
PY=${PYTHON:-python}
"$PY" - <<'PYCHECK' || { echo "error: missing packages (need torch, transformers, peft, accelerate)" >&2; exit 2; }
import importlib, sys
missing = [m for m in ("torch", "transformers", "peft", "accelerate") if importlib.util.find_spec(m) is None]
if missing:
    print("missing:", ", ".join(missing), file=sys.stderr)
    sys.exit(1)
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""), file=sys.stderr)
PYCHECK
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout --signal=TERM --kill-after=15 450 "$PY" bench/gpu_check.py --model "$MODEL" --out "$OUT" "${EXTRA[@]}"
