# make test  : create .venv if needed, install wrnlib with its dev and cluster (Ray) extras, run the test suite
# make study : the same environment, then execute the notebooks with the quick (CPU) profile
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test study venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

study: $(STAMP)
	$(PY) -m wrnlib study --profile $(or $(PROFILE),quick)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
