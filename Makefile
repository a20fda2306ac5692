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

demo: setup
	$(VENV)/bin/stmem run --config conf/demo.yaml

test: setup
	$(VENV)/bin/pytest
