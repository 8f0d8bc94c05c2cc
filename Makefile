# Two commands: `make demo` runs the product on the simulated world; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup demo test lint check-config clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The store's compiled planner (store/_planner.c), built in place with the venv's compiler settings.
PLANNER := store/_planner$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

$(PLANNER): store/_planner.c setup.py $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace
	rm -rf build

setup: $(VENV)/.installed $(PLANNER)

demo: setup
	$(PY) -m sentinel demo

check-config: setup
	$(PY) -m sentinel check-config

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint check-config
	$(PY) -m pytest -n 2 --dist worksteal  # two workers: the replays keep both cores busy

clean:
	rm -rf var .pytest_cache build store/_planner*.so
