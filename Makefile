# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv themselves.
# Any Python from 3.11 on (tested: 3.11, 3.12); another one with `make PYTHON=python3.12 ...`.
PYTHON ?= python3
# The torch wheel installed before the package (docs/install.md). The default takes the CPU wheel of 2.13.0
# that lies on the project's machines; elsewhere plain PyPI gives a multi-GB CUDA build on Linux, so a CPU-only
# machine adds TORCH_INDEX=https://download.pytorch.org/whl/cpu (and a GPU machine the index of its CUDA).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# The demo's task: the organs at risk the synthetic sites delineate, in TG-263 names (docs/organs.md).
DEMO_ORGANS ?= Spleen,Liver,Kidney_L,Kidney_R,Stomach,Pancreas,A_Aorta
# Extra `dose3d fl simulate` options for the demo. Seven organs need more passes than the job's default 25 x 4,
# and the three scanners need their own BatchNorm statistics (SiloBN): with FedAvg two organs stay below 0.98 of
# the central model. 20 rounds x 8 local epochs with SiloBN were chosen over three seeds on tuning patients; on
# new patients six organs reach 0.98 of central and the pancreas 0.972 (docs/segmentation.md). They fit the
# demo's 10 minutes on 2 cores from a fresh clone (.venv set-up included).
DEMO_FL_ARGS ?= --rounds 20 --local-epochs 8 --silobn

.PHONY: venv demo test clean

venv: $(STAMP)

# Re-installs when pyproject.toml changes. torch comes first, from the wheel chosen above, so that the package's
# range (torch>=2.8,<2.14) is already met and pip resolves no other build.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dose3d-fl needs Python 3.11 or newer, $(PYTHON) is " + sys.version.split()[0] + ": make PYTHON=python3.12 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/dose3d synth --out $(DEMO_DIR)/data/dicom --organs-at-risk --site-local $(DEMO_DIR)/data/local
	for site in $$(ls $(DEMO_DIR)/data/dicom); do \
		names=$(DEMO_DIR)/data/local/$$site/roi_names.json; \
		$(BIN)/dose3d ingest --input $(DEMO_DIR)/data/dicom/$$site --out $(DEMO_DIR)/data/cache/$$site \
			--organs $(DEMO_ORGANS) $$(test -f $$names && echo --roi-names $$names) || exit 1; \
	done
	$(BIN)/dose3d summary $(DEMO_DIR)/data/cache/*
	$(BIN)/dose3d fl simulate --workspace $(DEMO_DIR) --organs $(DEMO_ORGANS) $(DEMO_FL_ARGS)

# Two pytest workers (pytest-xdist), one test file per worker at a time so that module fixtures (a POC,
# a trained site) are built once, handed out in collection order: tests/conftest.py puts the longest files
# first. PYTEST_WORKERS=0 runs serially. The tests that start real server and
# client processes run in fresh workers of their own: an in-process simulator run earlier in a worker
# leaves NVFlare state behind that breaks a later admin login in that process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not deploy"
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m deploy

clean:
	rm -rf runs .pytest_cache
