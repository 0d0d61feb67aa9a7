# The README's two commands: `make run` (the main job) and `make test` (the whole suite).
# Both create the virtual environment .venv on first use (torch==2.13.0 and the stack).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MPLBACKEND ?= Agg
# the data folder: AMMS_DATA if set, else ./data, else ../shared/data (this workplace);
# with none of them the library falls back to built-in skimage images and says so
export AMMS_DATA ?= $(firstword $(wildcard $(CURDIR)/data) $(wildcard $(CURDIR)/../shared/data))

.PHONY: run test test-fast lab bicubic figures venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	touch $@

# main job: every notebook in order, quick mode, executed copies (figures inline) in
# runs/executed/, the HTML course in runs/course/, then the benchmark table (full mode on a
# GPU: make run MODE=full). The checkout stays clean: figures go to runs/figures/
MODE ?= quick
run: $(STAMP)
	TQDM_DISABLE=1 $(PY) scripts/run_notebooks.py --mode $(MODE)

# regenerate the curated figures/ (what the README and docs show) from a quick run
figures: $(STAMP)
	TQDM_DISABLE=1 $(PY) scripts/run_notebooks.py --mode quick --figures figures

# the bicubic baseline on every benchmark set and scale
bicubic: $(STAMP)
	$(PY) -m amms_lib.benchmark --model bicubic --overwrite --json runs/benchmark/bicubic.json

# JupyterLab on the suite, from the same environment (kernel "python3" = this venv)
lab: $(STAMP)
	@echo "JupyterLab on notebooks/ (open the URL with the token printed below; Ctrl-C twice stops it)"
	MPLBACKEND=module://matplotlib_inline.backend_inline $(PY) -m jupyter lab notebooks

# the linter (ruff, configured in pyproject.toml: a finding fails the run), the unit tests,
# then every notebook through nbval (lax: asserts in cells, no output diffs)
test: $(STAMP)
	$(VENV)/bin/ruff check amms_lib tests scripts benchmarks notebooks
	AMMS_MODE=quick TQDM_DISABLE=1 $(PY) -m pytest tests notebooks --nbval-lax \
		--nbval-current-env --nbval-cell-timeout 300 --durations=10

# the fast tier: everything but notebooks, the browser and the tests marked slow (subprocess
# runs of the tools, trainings); about 3 minutes on 2 cores; `make test` runs it all
test-fast: $(STAMP)
	$(VENV)/bin/ruff check amms_lib tests scripts benchmarks notebooks
	AMMS_MODE=quick TQDM_DISABLE=1 $(PY) -m pytest tests -m "not slow" --durations=10

clean:
	rm -rf $(VENV) runs
