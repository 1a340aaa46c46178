# Two commands for a newcomer: `make demo` and `make test`. Both create or refresh .venv from pyproject.toml.
# While working: `make test-fast` (no training, no server, no browser) and `make lint` (ruff + import-linter).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo lint test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job end to end, offline: synthesize labelled clips, train, export + certify ONNX, then score
# a two-day inbox through the Prefect flow (in-process, no server), the model tracked, registered and served by alias
# from a local MLflow store. ImageNet weights cannot be downloaded offline,
# so the demo trains from scratch; resnet18 learns the demo classes in a few minutes on 2 cores.
# Override: make demo DEMO_ARCH=resnet152 DEMO_WEIGHTS=imagenet DEMO_EPOCHS=10
DEMO := artifacts/demo
DEMO_ARCH ?= resnet18
DEMO_WEIGHTS ?= none
DEMO_EPOCHS ?= 5
DEMO_DEPTH = $(subst resnet,,$(DEMO_ARCH))
# The demo's MLflow store and registered-model cache live in its own folder (removed by the next demo).
demo: export MLFLOW_TRACKING_URI = sqlite:///$(CURDIR)/$(DEMO)/mlflow.db
demo: export TOOLCHAIN_MODEL_CACHE = $(CURDIR)/$(DEMO)/model-cache

demo: $(STAMP)
	rm -rf $(DEMO)
	mkdir -p $(DEMO)
	$(BIN)/toolchain demo-data --out $(DEMO)/data --per-class 24
	$(BIN)/toolchain train --data $(DEMO)/data/train --test $(DEMO)/data/test --arch $(DEMO_ARCH) \
		--weights $(DEMO_WEIGHTS) --epochs $(DEMO_EPOCHS) --out $(DEMO)/run
	$(BIN)/toolchain export-onnx --checkpoint $(DEMO)/run/resnet_$(DEMO_DEPTH)_model.pth --register demo
	$(BIN)/toolchain models promote demo 1
	$(BIN)/toolchain flow --model models:/demo@champion --inbox $(DEMO)/data/inbox --output-dir $(DEMO)/predictions
	@echo "demo outputs: $(DEMO)/run (checkpoint, plots, reports, model.onnx + parity.json, model.audio.onnx + parity.audio.json), $(DEMO)/predictions (CSVs and health reports) and $(DEMO)/mlflow.db (the tracked run and models:/demo; view with: $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI))"

lint: $(STAMP)
	$(BIN)/ruff check toolchain flows tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO) .pytest_cache
