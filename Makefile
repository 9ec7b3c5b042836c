# The two commands of the README:
#   make demo   score the bundled sample photos with the shipped model (local Ray) -> out/demo/
#   make test   install what is missing and run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Ray reports usage statistics to the internet by default; nothing leaves this machine unasked.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(BIN)/python jobs/score.py examples/images --out out/demo --overwrite

test: install
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check fer_ray jobs tests benchmarks
	$(BIN)/ruff format --check fer_ray jobs tests benchmarks
