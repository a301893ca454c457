# Two commands: `make run` (the demo) and `make test` (the suite). Both set up .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test setup services clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m runner --overwrite

# Services (XRootD, Slurm, munge) come from Debian; installed only when root and missing.
services:
	bash tests/jettracks_testing/services/install.sh

test: $(STAMP) services
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf outputs data/demo .pytest_cache

# Benchmark peers (issue 11): ROOT from PyPI in its own venv (never a project dependency),
# then the peers section (RDataFrame, idiomatic coffea, jettracks, I/O floor).
ROOT_VENV ?= .venv-root
.PHONY: bench-root bench-peers
bench-root:
	test -x $(ROOT_VENV)/bin/python || $(PYTHON) -m venv $(ROOT_VENV)
	echo '*' > $(ROOT_VENV)/.gitignore
	$(ROOT_VENV)/bin/python -c "import ROOT" 2>/dev/null || $(ROOT_VENV)/bin/python -m pip install -q root numpy

bench-peers: $(STAMP) bench-root
	$(PY) scripts/benchmark.py --only peers --peers-root-venv $(ROOT_VENV)
