# Two commands do everything: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastsae-stamp
SOURCES := pyproject.toml CMakeLists.txt tools/bootstrap.py $(shell find csrc python -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.json' -o -name '*.txt' \) 2>/dev/null)

.PHONY: demo test bench venv clean

$(STAMP): $(SOURCES)
	$(PYTHON) tools/bootstrap.py --venv $(VENV) --stamp $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastsae demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -q
	$(PY) benchmarks/bench_cooccurrence.py
	$(PY) benchmarks/bench_spanning_forest.py

clean:
	rm -rf build $(VENV) .pytest_cache
