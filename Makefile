# Quick start: `make run` serves the service on 127.0.0.1:8080; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-browser lint bench docs report compose-check clean

PORT ?= 8080

# A failed install removes the half-made venv, so the next `make` starts clean instead of reusing it.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; found " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	{ $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[test,bench]'; } \
		|| { rm -rf $(VENV); exit 1; }
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cds-service serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check cds_service tests bench deploy
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The governance dashboard in headless Chromium (tests/browser; `make test` runs it too). The
# screenshot and the downloaded CSV are kept under test-output/ (pytest's --basetemp).
test-browser: $(STAMP)
	mkdir -p test-output
	$(BIN)/python -m pytest tests/browser --basetemp=test-output/browser

lint: $(STAMP)
	$(BIN)/ruff check cds_service tests bench deploy

# Benchmark against the framework floor (issue 5; docs/performance.md), then the PostgreSQL arms
# (issue 13, bench/pgstate.py: a throwaway cluster; skipped where PostgreSQL's binaries are missing).
# About 5 minutes on 2 cores; BENCH_ARGS="--no-pg-arms" leaves the PostgreSQL arms out.
# Append the report to the doc: make bench BENCH_ARGS="--append docs/performance.md"
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Issue 9: share of in-scope oncology imaging orders of the fixture cases answered (rating or card).
report: $(STAMP)
	$(BIN)/cds-service report rated-share

# compose.yaml and deploy/k8s against the compose-spec and Kubernetes schemas (deploy/check.py says
# which validators ran: docker compose config / kubeconform / kubectl kustomize too where installed).
compose-check: $(STAMP)
	$(BIN)/python -m deploy.check

# make docs SITE=site.yaml: the document for one site's configuration (CDS_SITE_CONFIG).
SITE ?=
docs: $(STAMP)
	$(BIN)/python -m cds_service.knowledge.docs $(if $(SITE),--site $(SITE))

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info test-output
