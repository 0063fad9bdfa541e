# make study : create .venv with what the study needs (wrnlib, torch, papermill, JupyterLab) and execute the notebooks
#              with the quick (CPU) profile, and their HTML pages
# make lab   : the same environment, then JupyterLab on the notebooks
# make test  : the study's environment plus the test tools (pytest, Playwright, mutmut, nbstripout, ruff) and Ray,
#              then the lint and the test suite
# make lint  : ruff over the package, tests, scripts and notebooks (pyproject.toml's [tool.ruff])
# make test-oldest : the suite, browser tests aside, in .venv-oldest with the oldest Python and torch the package
#                    supports (OLDEST_PYTHON, default python3.10; torch 2.11, the GPU machine's)
# make mutation : mutation testing of the library core with mutmut (hours on two cores, so not run by CI; it resumes
#                 where it stopped, and from results/mutation/state.jsonl on a new checkout: only the mutants of
#                 changed functions run again), then results/mutation/report.md. JOBS=n sets the parallel mutants
#                 (default: cores)
# make mutation-recheck : after new tests, judge again the survivors not listed as equivalent and the timeouts
# make hooks : strip outputs from notebooks/*.ipynb whenever they are staged (run by the test install)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: test lint test-oldest study lab mutation mutation-recheck venv clean hooks

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(DEV): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	$(MAKE) --no-print-directory hooks
	touch $(DEV)

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(DEV)
	$(VENV)/bin/ruff check --quiet .

# pyproject's lower bounds: torch>=2.11, torchvision>=0.26, requires-python>=3.10. The browser tests drive
# JupyterLab, not torch, and make test runs them.
OLDEST_PYTHON ?= python3.10
OLDEST_VENV   ?= .venv-oldest
OLDEST_TORCH  ?= torch==2.11.0 torchvision==0.26.0
test-oldest:
	test -x $(OLDEST_VENV)/bin/python || $(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet $(OLDEST_TORCH) -e '.[dev,cluster]'
	$(OLDEST_VENV)/bin/python -c "import sys, torch; print('test-oldest: Python', sys.version.split()[0], 'torch', torch.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -q -m "not browser" $(PYTEST_ARGS)

study: $(STAMP)
	$(PY) -m wrnlib study --profile $(or $(PROFILE),quick)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

# One torch thread per mutant's tests (JOBS of them share the cores; more and their thread pools fight and time out),
# on the shipped sample (CIFAR10_DIR emptied): each mutant's worker loads its data afresh, and the full set costs
# seconds each time and pushes the slowest workers past mutmut's timeout.
mutation: $(DEV)
	$(PY) scripts/mutation_report.py --restore
	CIFAR10_DIR= OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(or $(JOBS),$(shell nproc))
	$(PY) scripts/mutation_report.py

# mutmut judges a mutant once: after new tests, run again by name the survivors not listed as equivalent and the
# timeouts (the first pass's when the machine was busy), then the report.
# With no names mutmut would run every unchecked mutant instead, so an empty list runs nothing.
mutation-recheck: $(DEV)
	$(PY) scripts/mutation_report.py --restore
	names="$$($(PY) scripts/mutation_report.py --recheck)"; test -z "$$names" || \
	  CIFAR10_DIR= OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(or $(JOBS),$(shell nproc)) $$names
	$(PY) scripts/mutation_report.py

# What `nbstripout --install` sets up for the filter that .gitattributes names, plus --keep-id so that the
# notebooks' cell ids stay as committed. Outside a git checkout there is nothing to set up.
hooks:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id' && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.required true && \
	  git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id -t' && \
	  echo "git: notebooks/*.ipynb lose their outputs when staged (nbstripout filter)"; \
	fi

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache build *.egg-info mutants
