# Two commands on a fresh machine: `make train` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install train train-30min test docs export clean-nbs bench

install: $(STAMP)

# torch goes first by its exact pin so that nothing later pulls a CUDA build.
$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	@# Debian's Chromium for the browser test (Playwright drives it; no browser download)
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || \
	  echo "no Chromium could be installed: tests/test_browser.py will be skipped"
	touch $(STAMP)

# Train on the embedded demo market in data/demo; results go to runs/demo.
train: install
	$(BIN)/alphanb train --data data/demo --universe csi300 --out runs/demo

# The same on intraday bars: a synthetic 30-minute market made in runs/demo30min/data, trained on with --freq 30min.
train-30min: install
	$(BIN)/alphanb demo-data --freq 30min --out runs/demo30min/data
	$(BIN)/alphanb train --data runs/demo30min/data --freq 30min --universe csi300 --out runs/demo30min

# nbdev_clean and nbdev_export must leave the tree as committed; then the notebooks, then pytest on TEST_WORKERS workers,
# each taking one test at a time, the longest first (tests/conftest.py).
TEST_WORKERS ?= 2
test: install
	@before=$$(git status --porcelain --untracked-files=all -- nbs alphanb 2>/dev/null; git diff -- nbs alphanb 2>/dev/null | sha1sum); \
	$(BIN)/nbdev_clean || { echo "nbdev_clean failed"; exit 1; }; \
	$(BIN)/nbdev_export || { echo "nbdev_export failed"; exit 1; }; \
	after=$$(git status --porcelain --untracked-files=all -- nbs alphanb 2>/dev/null; git diff -- nbs alphanb 2>/dev/null | sha1sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev_clean/nbdev_export changed files: the notebooks and alphanb/ were not committed clean and in sync:"; \
	  git status --short -- nbs alphanb; exit 1; fi
	$(BIN)/python tools/readme.py --check
	@# the package's bytecode, written once: where Python does not write it (PYTHONDONTWRITEBYTECODE), every process of the
	@# run would compile alphanb again
	$(BIN)/python -m compileall -qq alphanb
	$(MAKE) --no-print-directory docs
	@$(BIN)/pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 1 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# The notebooks run as tests (nbdev's rules: a failing cell fails the run) and keep their outputs; Sphinx with myst-nb
# renders them, the experiment records and README into _docs/index.html. Any warning fails the build.
docs: install
	$(BIN)/python tools/run_nbs.py --n_workers 2 --out docs/nbs
	$(BIN)/sphinx-build -q -E -W --keep-going -b html docs _docs

export:
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python tools/readme.py

# Benchmarks on real Qlib data (default: the shared A-share data beside the checkout): `make bench DATA=/path/to/cn_data`.
DATA ?= ../shared/data/cn_data
bench: install
	$(BIN)/alphanb bench load --data $(DATA)
	$(BIN)/alphanb bench eval --data $(DATA)
	$(BIN)/alphanb bench alpha158 --data $(DATA)
	$(BIN)/alphanb bench backtest --data $(DATA)
	$(BIN)/alphanb bench threads --data $(DATA)
	$(BIN)/alphanb bench scale --data $(DATA)
