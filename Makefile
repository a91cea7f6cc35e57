# Two commands work on a fresh machine: `make demo` and `make test`. Each creates .venv and
# installs the project with all optional groups the first time (and again when
# pyproject.toml changes), so nothing else needs to be run first.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: test demo bench soak lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cli,local,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/shardline demo

bench: $(STAMP)
	$(PY) -m bench handler
	$(PY) -m bench coldstart
	$(PY) -m bench sinks
	$(PY) -m bench producer

# The e2e fault scenarios at a larger scale and the example under steady load for
# SOAK_MINUTES; rewrites RELIABILITY.md.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) -m bench soak --minutes $(SOAK_MINUTES)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .ruff_cache .mypy_cache
