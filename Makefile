# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
MYSQL_HOST ?= 127.0.0.1
MYSQL_PORT ?= 3306

.PHONY: run test unit lint bench install ensure-mysql prometheus-tools chromium galera-up galera-down galera-status cluster cluster-down cluster-status clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/infinite-scheduler run --config config.toml --demo

test: $(STAMP) ensure-mysql prometheus-tools chromium
	$(BIN)/python -m pytest -q --durations=25

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The bench extra (APScheduler, matplotlib, ...) has its own stamp: `make test` never pulls it.
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ensure-mysql
	$(BIN)/python -m benchmarks all --quick

# Starts the local MariaDB when it has stopped (our machines run one at 127.0.0.1:3306). By its
# pid file: the Galera test nodes are mariadbd processes too, and would pass for it.
ensure-mysql: $(STAMP)
	@if ! $(BIN)/python -c "import socket; socket.create_connection(('$(MYSQL_HOST)', $(MYSQL_PORT)), 2)" 2>/dev/null; then \
		echo "MariaDB not reachable at $(MYSQL_HOST):$(MYSQL_PORT); starting it"; \
		start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid \
			--exec /usr/sbin/mariadbd || true; \
		for i in $$(seq 1 30); do \
			$(BIN)/python -c "import socket; socket.create_connection(('$(MYSQL_HOST)', $(MYSQL_PORT)), 2)" 2>/dev/null && break; \
			sleep 1; \
		done; \
	fi

# Debian's prometheus package gives tests/ops `prometheus` and `promtool`; installed (as root)
# only when missing, without its recommends (the node exporter). The package would start its
# service: policy-rc.d or no init forbids it in containers, and elsewhere it is stopped again,
# so nothing is left on port 9090 (the tests run their own server on a free port).
prometheus-tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
			&& { service prometheus stop >/dev/null 2>&1 || true; }; \
	fi

# Debian's chromium for the dashboard's browser tests (tests/e2e/test_dashboard_browser.py),
# driven by Playwright from PyPI with executable_path: never `playwright install` (no browser
# download). Installed (as root) only when missing, without its recommends.
chromium:
	@if ! command -v chromium >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

# A three-node Galera cluster on 127.0.0.1:3311..3313 (issue 13); data under /tmp/infsched-galera.
galera-up:
	scripts/galera.sh up

galera-down:
	scripts/galera.sh down

galera-status:
	scripts/galera.sh status

# docker/compose.yaml's topology on this machine: two engine nodes on the local MariaDB, the
# management API and Prometheus with the alert rules (scripts/cluster.sh; data under
# /tmp/infsched-cluster). `make cluster` again starts only what is not running.
cluster: $(STAMP) ensure-mysql prometheus-tools
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

cluster-status:
	scripts/cluster.sh status

clean:
	rm -rf $(VENV) build *.egg-info
