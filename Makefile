# The consent authority. Fresh clone: `make install`, then `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python

.PHONY: install run test test-fast proto proto-check proto-release lint fmt bench clean

# What the suite runs besides Python: a real redis-server, and Chromium for the link pages.
SYSTEM_DEPS := redis-server redis-server "chromium|chromium-browser" chromium

# buf (proto lint and breaking-change check) from npm, pinned by package-lock.json.
BUF := node_modules/.bin/buf
# What `buf breaking` compares proto/ with: the contract of the last release, kept in
# the repository so the check works in any clone (a CI clone of main alone would
# otherwise compare main with itself). `make lint BUF_AGAINST='.git#branch=main'`
# compares with main instead.
BUF_AGAINST ?= proto/released.json

NODE_CLIENT := clients/node
GENERATED := clients/python/consent_client/v1 $(NODE_CLIENT)/src/gen

install: $(VENV)/.installed node_modules/.installed $(NODE_CLIENT)/node_modules/.installed ## create .venv, install server, clients, dev tools (+ redis-server, chromium, buf)

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@scripts/apt-ensure.sh $(SYSTEM_DEPS) \
		|| echo "warning: install the packages above, or make test will fail" >&2
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e clients/python -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The TypeScript client's locked dependencies (ts-proto, grpc-js, typescript).
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install ## start the server on the embedded (in-memory, NOT durable) store
	$(PYTHON) -m consent_server

# Coverage of the code the tests run in process (the server processes of the e2e tests
# are not measured); the floor sits just below today's figure, so it can only rise.
COVERAGE_FLOOR := 76

test: install ## the whole suite: unit, property, store (fakeredis + real redis-server), e2e; coverage
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# The pure and in-process tests: no redis-server, cluster, browser, server process, nor
# the slow scenarios (markers in pyproject.toml, derived in tests/conftest.py).
FAST := not redis and not cluster and not browser and not e2e and not slow

test-fast: install ## the pure and in-process tests only (under a minute)
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q -m '$(FAST)'

proto: install ## regenerate clients/python/consent_client/v1 and clients/node/src/gen from proto/
	$(PYTHON) scripts/gen_proto.py

proto-check: proto ## fail when the committed generated code is stale
	git diff --exit-code -- $(GENERATED) \
		|| (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- $(GENERATED))" \
		|| (echo "untracked generated files: run 'make proto' and commit" >&2; exit 1)

lint: install ## ruff (format + check), mypy --strict, buf lint and buf breaking, tsc --strict + prettier (clients/node)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) breaking proto --against '$(BUF_AGAINST)'
	cd $(NODE_CLIENT) && npm run --silent lint

proto-release: install ## record proto/ as the released contract that buf breaking checks against
	$(BUF) build proto --exclude-source-info -o proto/released.json

fmt: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cd $(NODE_CLIENT) && npm run --silent fmt

bench: install ## load test: prints our numbers beside same-run baselines (BENCH_ARGS=--quick)
	@bench/install-h2load.sh || echo "h2load unavailable: using the Python load generator" >&2
	$(PYTHON) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
