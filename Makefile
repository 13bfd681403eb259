# Two commands matter: `make serve` and `make test`. Both work on a fresh machine
# with Python 3.11+ and make; they create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?= --dev

.PHONY: serve test lint typecheck layers pytest fuzz bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/homeserver serve $(ARGS)

test: $(STAMP) system-deps lint typecheck layers pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

# The long schemathesis profile (make test runs 25 examples per operation).
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/observability/test_schemathesis.py

# ffmpeg makes video posters; PostgreSQL and Redis are the cluster engines (issue 14).
# The tests that need them are skipped (and say so) without them.
# Installed here when we can (root with apt-get); never fatal.
system-deps:
	@{ ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql and redis-server (cluster-mode tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null) \
	      || echo "could not install postgresql/redis-server: the cluster-mode tests will be skipped"; \
	  else echo "postgresql or redis-server not found: the cluster-mode tests will be skipped"; fi; }
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing ffmpeg (video poster thumbnails)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
	      || echo "could not install ffmpeg: the video poster test will be skipped"; \
	  else echo "ffmpeg not found: the video poster test will be skipped"; fi; }

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
