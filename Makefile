# purify: the book and its checks. Every target creates .venv first if it is missing.
#   make book        environment, offline assets, execute the chapters at PROFILE (default quick) whose notebook,
#                    library code or profile changed, build _build/<PROFILE>/_build/html/
#   make test        the style gate (ruff), unit tests, every chapter under nbval at smoke, the smoke book
#                    (_build/smoke/, from nbval's executions), the browser checks of that book and of JupyterLab
#   make lab         JupyterLab with working widgets (live recomputation on the trained models)
#   make weights     train the zoo's models at PROFILE and ship them in weights/ (MODELS="pure_pgd gandef"),
#                    resumable after every epoch; meant for hours in the background
#   make regenerate  re-execute chapters with papermill and rewrite results/<PROFILE>/ (CHAPTERS="01_attacks")
#   make gpu-bundle  .gpu/: wheels and datasets to carry to the offline GPU machine (CHAPTERS="02_apegan")
#   make clean       remove build outputs (not .venv, not the weight cache)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
CHAPTERS ?=
JB_FLAGS := -W -n --keep-going
# one build folder per profile, so the smoke book of `make test` never overwrites the reader's quick book
BUILD = _build/$(1)
HTML = $(call BUILD,$(1))/_build/html
export PURIFY_DOWNLOAD ?= 0
# batch runs (book build, nbval, regenerate): precomputed widget frames, no progress-bar widgets in outputs
BATCH := PURIFY_WIDGETS=static TQDM_DISABLE=1

.PHONY: env assets book test lint unit nbval book-smoke browser chromium lab weights regenerate gpu-bundle clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test]"
	touch $@

assets:
	scripts/vendor_assets.sh

# a build of PROFILE in _build/PROFILE: chapters whose inputs changed since the last build there are marked for
# re-execution first (scripts/stale_chapters.py), their stamps recorded after a successful build
define build_book
	$(BIN)/python scripts/stale_chapters.py check --build $(call BUILD,$(1)) --profile $(1)
	PURIFY_PROFILE=$(1) $(BATCH) $(if $(KEEP),PURIFY_EXECUTION_CACHE=$(KEEP)) \
		$(BIN)/jupyter-book build . --path-output $(call BUILD,$(1)) $(JB_FLAGS)
	$(BIN)/python scripts/stale_chapters.py record --build $(call BUILD,$(1)) --profile $(1)
	@echo "book ($(1)): $(call HTML,$(1))/index.html"
endef

book: env assets
	$(call build_book,$(PROFILE))

# the style gate: pycodestyle errors/warnings and pyflakes (unused imports, undefined names) on the library,
# the tests, the benchmarks, the scripts and the chapters (ruff reads notebooks itself); settings in pyproject.toml
lint: env
	$(BIN)/ruff check src tests benchmarks scripts book

unit: env
	$(BIN)/pytest tests -m "not browser" -q

# `make test` executes each chapter once (its slowest cells listed at the end, for CI's time): nbval keeps
# what it ran in KEEP (scripts/nbval_keep.py, a jupyter-cache)
# and the smoke book shows those executions (book/_ext/purify_sphinx.py); `make nbval` or `make book-smoke` alone
# keep nothing and read nothing kept
test: KEEP := $(CURDIR)/$(call BUILD,smoke)/nbval-executed

nbval: env
	$(if $(KEEP),rm -rf $(KEEP),@true)
	PURIFY_PROFILE=smoke $(BATCH) PYTHONPATH=scripts $(BIN)/pytest -p nbval_keep --nbval-lax -q book/ \
		--durations=12 $(if $(KEEP),--nbval-keep $(KEEP))

book-smoke: env assets
	$(call build_book,smoke)

chromium:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

# the browser check of the book built at BROWSER_PROFILE (make test: the smoke book it just built)
BROWSER_PROFILE ?= smoke
browser: env chromium
	PURIFY_HTML=$(call HTML,$(BROWSER_PROFILE)) $(BIN)/pytest tests -m browser -q

test: lint unit nbval book-smoke browser

lab: env
	$(BIN)/jupyter lab --notebook-dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

MODELS ?=
weights: env
	nice -n 19 $(BIN)/python -m purify_lib.zoo --profile $(PROFILE) $(MODELS)

regenerate: env
	$(BIN)/purify-regenerate $(CHAPTERS) --profile $(PROFILE)

# papermill & co. as Python 3.12 wheels (minus what the GPU machine has) and the chapters' datasets from
# PURIFY_DATA, in .gpu/ (at most 60 MiB); see README, "On a GPU machine"
gpu-bundle: env
	$(BIN)/python scripts/gpu_bundle.py $(CHAPTERS)

clean:
	rm -rf _build .pytest_cache .jupyter_cache results/smoke
