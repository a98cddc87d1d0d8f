# Commands that work on a fresh machine with only Python 3.11 and pip:
#   make demo      -> creates .venv, installs the package, trains on scikit-learn's bundled digits
#   make test      -> creates .venv, installs the package with its test extras, runs the fast,
#                     representative suite (every test not marked `slow`)
#   make test-all  -> the same with every test, slow ones included (what .ci/run runs)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -n 2 --dist loadfile -q -rs --durations=15

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[export,examples,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

# CJK fonts for the glyph open-set benchmark (keras_facemargin.data.glyphs); Debian/Ubuntu, root
fonts:
	sh benchmarks/install_fonts.sh

.PHONY: install demo test test-all fonts
