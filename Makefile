# maildispatch: two commands from a fresh clone — `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements.lock

.PHONY: demo test lint typecheck audit check schema bench bench-quick lock clean

# Every dependency (dev and bench extras included) pinned and hash-checked from $(LOCK), then
# the project itself without its dependencies; `pip check` fails when the lock no longer
# satisfies pyproject.toml (run `make lock` after changing dependencies). docs/decisions.md.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Re-resolve $(LOCK) from pyproject.toml (newest allowed releases, every platform, with hashes);
# setuptools and wheel are in it because the editable install above builds without isolation.
lock: $(STAMP)
	printf 'setuptools>=78.1.1\nwheel\n' | $(BIN)/uv pip compile pyproject.toml - \
		--all-extras --universal --generate-hashes \
		--custom-compile-command 'make lock' --quiet --output-file $(LOCK)

demo: $(STAMP)
	$(BIN)/maildispatch demo

# Two pytest-xdist workers, a test file each at a time (a file's fixtures start its fleet once),
# in the order collected: the slow end-to-end and fault files first, the many quick unit files
# last to fill the gaps (xdist's default, most tests first, ran the one-test bench smoke last);
# each worker owns its own Redis database (tests/conftest.py)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pip-audit over $(LOCK); says AUDIT NOT DONE (and passes) where no vulnerability service is
# reachable, unless MAILDISPATCH_AUDIT_REQUIRED=true (.ci/audit.py)
audit: $(STAMP)
	$(BIN)/python .ci/audit.py $(LOCK)

check: lint typecheck test

schema: $(STAMP)
	$(BIN)/python -m producers.schema > docs/sendjob.schema.json
	$(BIN)/python -m worker.api.app > docs/openapi.json

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
