# The consent authority. Fresh clone: `make install`, then `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python

.PHONY: install run test proto proto-check lint fmt bench clean

# What the suite runs besides Python: a real redis-server, and Chromium for the link pages.
SYSTEM_DEPS := redis-server redis-server "chromium|chromium-browser" chromium

NODE_CLIENT := clients/node
GENERATED := clients/python/consent_client/v1 $(NODE_CLIENT)/src/gen

install: $(VENV)/.installed $(NODE_CLIENT)/node_modules/.installed ## create .venv, install server, clients, dev tools (+ redis-server, chromium)

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@scripts/apt-ensure.sh $(SYSTEM_DEPS) \
		|| echo "warning: install the packages above, or make test will fail" >&2
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e clients/python -e '.[dev]'
	touch $@

# The TypeScript client's locked dependencies (ts-proto, grpc-js, typescript).
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install ## start the server on the embedded (in-memory, NOT durable) store
	$(PYTHON) -m consent_server

test: install ## the whole suite: unit, property, store (fakeredis + real redis-server), e2e
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q

proto: install ## regenerate clients/python/consent_client/v1 and clients/node/src/gen from proto/
	$(PYTHON) scripts/gen_proto.py

proto-check: proto ## fail when the committed generated code is stale
	git diff --exit-code -- $(GENERATED) \
		|| (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- $(GENERATED))" \
		|| (echo "untracked generated files: run 'make proto' and commit" >&2; exit 1)

lint: install ## ruff (format + check), mypy --strict, tsc --strict + prettier (clients/node)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	cd $(NODE_CLIENT) && npm run --silent lint

fmt: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cd $(NODE_CLIENT) && npm run --silent fmt

bench: install ## load test: prints our numbers beside same-run baselines (BENCH_ARGS=--quick)
	@bench/install-h2load.sh || echo "h2load unavailable: using the Python load generator" >&2
	$(PYTHON) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
