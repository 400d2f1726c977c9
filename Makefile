# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# Extra `dose3d fl simulate` options for the demo; empty: the job defaults (25 rounds x 4 local epochs).
DEMO_FL_ARGS ?=

.PHONY: venv demo test clean

venv: $(STAMP)

# Re-installs when pyproject.toml changes. torch is pinned first so pip takes the local CPU wheel
# instead of resolving a CUDA build from the index.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/dose3d synth --out $(DEMO_DIR)/data/dicom
	for site in $$(ls $(DEMO_DIR)/data/dicom); do \
		$(BIN)/dose3d ingest --input $(DEMO_DIR)/data/dicom/$$site --out $(DEMO_DIR)/data/cache/$$site || exit 1; \
	done
	$(BIN)/dose3d summary $(DEMO_DIR)/data/cache/*
	$(BIN)/dose3d fl simulate --workspace $(DEMO_DIR) $(DEMO_FL_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
