# The two commands: `make demo` (train -> export -> serve -> ask -> load test) and `make test`.
# Both bootstrap .venv first; that step is skipped while pyproject.toml is unchanged.
# `make test` also installs the Debian packages some tests run (Chromium, Prometheus) when
# they are missing and it runs as root; otherwise it prints the command (scripts/test_deps.sh).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format proto clean

$(STAMP): pyproject.toml setup.py kernels/paged_attention.cpp kernels/top_logprobs.cpp
	@echo "==> bootstrapping $(VENV) (first time: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --progress-bar off -e ".[train,dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	@$(BIN)/python scripts/demo.py

test: venv
	@scripts/test_deps.sh $(BIN)/python
	@scripts/lm_eval_venv.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

# Regenerate the committed gRPC stubs (tests/test_proto.py fails when they are stale).
proto: venv
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. proto/kvserve.proto

clean:
	rm -rf runs .pytest_cache .ruff_cache
