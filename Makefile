# The two commands of the README:
#   make demo   score the bundled sample photos with the shipped model (local Ray) -> out/demo/
#   make test   install what is missing (training and test extras too) and run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Ray reports usage statistics to the internet by default; nothing leaves this machine unasked.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install install-all demo test lint
# install: the lean install (scoring, reports, Serve; no torch). install-all adds training and the tests.
install: $(VENV)/.installed
install-all: $(VENV)/.installed-all

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# pip's output (setuptools' editable-install banner) goes to a log, shown only if the install fails
	$(BIN)/python -m pip install -q -e . >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	touch $@

$(VENV)/.installed-all: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,test]' >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	touch $(VENV)/.installed $@

demo: install
	$(BIN)/python jobs/score.py examples/images --out out/demo --overwrite

test: install-all
	tools/install_chromium.sh
	$(BIN)/python -m pytest -q -ra

lint: install-all
	$(BIN)/ruff check fer_ray jobs tests benchmarks tools
	$(BIN)/ruff format --check fer_ray jobs tests benchmarks tools
	@# no copy-pasted block of six or more lines inside the library
	$(BIN)/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --ignore-imports=y --ignore-docstrings=y --ignore-comments=y --score=n fer_ray
