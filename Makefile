# The README's commands. Every target installs first, so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch that lies on this kind of machine; pulled first so no CUDA build is fetched.
TORCH_CPU ?= torch==2.13.0
# KenLM's lmplz and build_binary, built from the kenlm sdist once per machine (scripts/build_kenlm.sh).
KENLM_VERSION ?= 0.3.0
KENLM_BIN ?= $(HOME)/.cache/lm_platform/kenlm-$(KENLM_VERSION)/bin
# A second environment with transformers 4.57 (no torch): the tests load our tokenizers and checkpoint
# configs under it, since many downstream tools still run transformers 4.x.
VENV_TF4 ?= .venv-tf4
TF4_SPEC ?= transformers==4.57.*

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export LM_PLATFORM_STORAGE ?= $(CURDIR)/data
export PYTHONUNBUFFERED := 1
export LM_PLATFORM_KENLM_BIN := $(KENLM_BIN)
# Nothing is ever fetched from a model or dataset hub at run time.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# The local executor runs as many steps at once as there are cores, so each step process (and the trainer
# it launches) does its math on one thread (torch, NumPy) instead of every process spreading over every
# core: on 2 cores, two steps of two threads each made the demo's LoRA steps three times slower.
# Override with OMP_NUM_THREADS=N (a GPU machine, or one stage training alone on many cores).
export OMP_NUM_THREADS ?= 1

.PHONY: install kenlm postgres tf4 browser demo mixture-search test ui lint format clean dagster-home

install: $(VENV)/.installed kenlm postgres tf4 browser

# PostgreSQL for the production-instance test (Debian's package, apt-get when missing and root).
postgres:
	bash scripts/install_postgres.sh

# Debian's Chromium for the browser test (Playwright, the Python package, drives /usr/bin/chromium).
browser:
	bash scripts/install_chromium.sh

kenlm: $(KENLM_BIN)/lmplz

$(KENLM_BIN)/lmplz: | $(VENV)/.installed
	bash scripts/build_kenlm.sh "$(KENLM_BIN)" "$(KENLM_VERSION)" "$(PY)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) show torch >/dev/null 2>&1 || $(PIP) install -q "$(TORCH_CPU)" || echo "note: $(TORCH_CPU) not available here; the project's torch range applies"
	$(PIP) install -q -e '.[dev]'
	touch $@

tf4: $(VENV_TF4)/.installed

$(VENV_TF4)/.installed:
	test -x $(VENV_TF4)/bin/python || $(PYTHON) -m venv $(VENV_TF4)
	$(VENV_TF4)/bin/python -m pip install -q "$(TF4_SPEC)" tokenizers
	touch $@

dagster-home:
	mkdir -p "$(DAGSTER_HOME)" "$(LM_PLATFORM_STORAGE)"
	cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

# The demo in three runs (lm_platform_tests/conftest.py DEMO_STEPS runs the same): everything but the
# evaluations and the export (the model_versions asset registers each model as a partition of demo_models),
# the benchmarks of the last stage and of the exported version, then the leaderboard and the export, whose
# model card shows the exported version's scores. Each run materializes only the assets of its selection that are missing or stale
# (lm_platform.defs.plan): a second `make demo` on the same storage recomputes nothing that did not change.
# FORCE=1 rebuilds (and retrains) everything. Other versions: `--partition main`, or from the UI.
DEMO_VERSIONS ?= anneal merged/final
DEMO_PLAN = $(PY) -m lm_platform.defs.plan --run $(if $(FORCE),--all)
demo: install dagster-home
	$(DEMO_PLAN) 'not group:evaluation and not group:mixture_search and not key:"export/*"'
	for v in $(DEMO_VERSIONS); do \
		$(DEMO_PLAN) 'group:evaluation and not key:"eval/leaderboard"' --partition "$$v" || exit 1; \
	done
	$(DEMO_PLAN) 'key:"eval/leaderboard" or key:"export/*"'
	$(PY) -m lm_platform.defs.summary

# The demo's mixture search (group mixture_search, which `make demo` leaves out; it needs the demo's tokens
# and tokenizer): the candidates, each candidate's proxy (blend, dataset, checkpoint, score; one run per
# candidate), then the recommendation with its verification proxy. Missing and stale assets only, as above.
MIXTURE_PROXIES = key:"mixture_blend/*" or key:"mixture_dataset/*" or key:"mixture_checkpoint/*" or key:"mixture_score/*"
mixture-search: install dagster-home
	$(DEMO_PLAN) '+key:"mixture_candidates/*"'
	$(DEMO_PLAN) '$(MIXTURE_PROXIES)' --each-partition
	$(DEMO_PLAN) 'key:"mixture_recommendation/*"'

# Two pytest workers (pytest-xdist): one materializes the shared demo and runs the tests that read it,
# the other runs the rest, a test file at a time (conftest.py schedules them). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

ui: install dagster-home
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf "$(DAGSTER_HOME)" "$(LM_PLATFORM_STORAGE)"
