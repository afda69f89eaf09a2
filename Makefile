# faceaudit: `make demo` runs the pipeline on real faces; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build pinned here is what this project is tested with; override for CUDA.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
# Real faces: DEMO_DATA, else ../shared/data/orl when present, else scikit-learn's Olivetti faces.
DEMO_DATA ?=
export DEMO_DATA

.PHONY: install test demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) -m faceaudit demo --out $(DEMO_OUT)

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info .pytest_cache
