# Conveyor: `make run` to try it, `make test` to check it. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install assets browser lint format typecheck promtool screenshots example unit stack-up stack-down stack-status migrate bench bench-large clean

run: stack-up install  ## stack up, install, migrate, then API + worker in the foreground
	$(BIN)/conveyor migrate
	$(BIN)/conveyor dev

test: stack-up install promtool browser lint typecheck  ## stack up, install, ruff, mypy, the whole pytest suite
	$(BIN)/pytest

unit: install  ## the pure unit tests only: no services needed
	$(BIN)/pytest tests/unit -q

install: $(STAMP) assets

assets:  ## the console's front-end assets, pinned in ui/package-lock.json, from the npm registry
	@sh ui/install-assets.sh

browser:  ## Debian's chromium and chromium-driver for the browser tests (apt-get update only if needed)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; }

promtool:  ## promtool (Debian's prometheus package, no server left running) for the alert tests
	@sh ops/prometheus/install-promtool.sh

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt | assets  # the package ships the assets
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e . --group dev
	$(BIN)/python -m pip install -q -c constraints.txt -e './client[kafka]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

stack-up:
	$(PYTHON) stack/stack.py up

stack-down:
	$(PYTHON) stack/stack.py down

stack-status:
	$(PYTHON) stack/stack.py status

migrate: stack-up install
	$(BIN)/conveyor migrate

example: stack-up install  ## the shop: Conveyor, a payment and a carrier service (client library), 60 orders
	$(BIN)/python -m examples.shop

screenshots: stack-up install browser  ## docs/console-*.png: the console's main pages in headless Chromium
	$(BIN)/python docs/screenshots.py

bench: stack-up install  ## every benchmark's table, then issue 16's targets beside their figures (~15 min)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || true
	$(BIN)/python bench/targets.py --reset
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/kafka_worker.py
	$(BIN)/python bench/worker_process.py  # conveyor worker processes draining 20,000 events
	$(BIN)/python bench/worker_latency.py  # one worker paced at 4,000, 2,000, 1,000 events/s
	$(BIN)/python bench/http_api.py
	$(BIN)/python bench/operator_queries.py --quick  # 10,000 vs 100,000 instances
	$(BIN)/python bench/timers.py  # 10,000 timers due at once
	$(BIN)/python bench/worker_memory.py  # worker RSS under load for 1 minute
	$(BIN)/python bench/schedules.py  # 10,000 schedules due at one instant, one and two workers
	$(BIN)/python bench/targets.py

bench-large: stack-up install  ## issue 16's figures at scale: 1,000,000 instances, 100,000 timers, RSS over 10 minutes (~25 min)
	$(BIN)/python bench/operator_queries.py  # 10,000 vs 1,000,000 instances
	$(BIN)/python bench/timers.py --timers 100000
	$(BIN)/python bench/worker_memory.py --minutes 10
	$(BIN)/python bench/targets.py

clean: stack-down
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis
