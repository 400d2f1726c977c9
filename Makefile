# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv demo test lint bench-data clean

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
	$(BIN)/dose3d synth --out $(DEMO_DIR)/dicom
	for site in $$(ls $(DEMO_DIR)/dicom); do \
		$(BIN)/dose3d ingest --input $(DEMO_DIR)/dicom/$$site --out $(DEMO_DIR)/cache/$$site || exit 1; \
	done
	$(BIN)/dose3d summary $(DEMO_DIR)/cache/*

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
