# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv and install the project into it first (once).
PYTHON ?= python3
VENV   := .venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# the CPU wheel first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: setup demo test
setup: $(VENV)/.installed

# the pipeline, then the same model trained with memory off on the same data
demo: setup
	$(VENV)/bin/stmem run --config conf/demo.yaml
	$(VENV)/bin/python benchmarks/ablation.py --config conf/demo.yaml --variants no_memory --out runs/demo/memory_off.json

test: setup
	$(VENV)/bin/pytest
