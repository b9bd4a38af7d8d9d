# make demo | make test | make bench -- each creates .venv and installs the project when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench peers venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot,sequence,spark,umap]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/featurestore demo

# lint: ruff (style and complexity), mypy, and the layer contracts (import-linter, pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check featurestore pipelines tests benchmarks
	$(VENV)/bin/mypy featurestore
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q

# Peers (Feast, gensim) live in their own virtualenv, never in the product's dependencies.
PEERS := .venv-peers
peers: $(PEERS)/.installed

$(PEERS)/.installed:
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet 'feast[duckdb]' gensim duckdb pyarrow pandas numpy httpx
	touch $(PEERS)/.installed

bench: $(STAMP)
	$(PY) benchmarks/bench_storage.py
	$(PY) benchmarks/bench_serving.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_validation.py
	$(PY) benchmarks/bench_ui.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis featurestore_data
