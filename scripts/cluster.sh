#!/usr/bin/env bash
# docker/compose.yaml's topology without containers, on this machine (issue 16):
# two engine nodes (`infinite-scheduler run`) on the local MariaDB, the management API alone
# (`infinite-scheduler api`) and Prometheus with docker/prometheus/alerts.yml scraping both nodes.
#
#   scripts/cluster.sh up      make the store, start what is not running, wait until each answers
#   scripts/cluster.sh down    stop every process it started (SIGTERM, SIGKILL after 20 s);
#                              nothing is left listening
#   scripts/cluster.sh status  one line per process: pid, port, answering or not
#
# Settings (environment):
#   CLUSTER_DIR        configs, pid files, logs, Prometheus data (default /tmp/infsched-cluster)
#   CLUSTER_STORE_URL  the store both nodes share (default mysql://root@127.0.0.1:3306/infsched_cluster)
#   CLUSTER_PORTS      "METRICS1 METRICS2 API PROMETHEUS" (default "19464 19465 18464 19090")
#   CLUSTER_RUN_ARGS   what the nodes run (default --demo: the examples and a demo producer;
#                      --app MODULE:FUNCTION for your own handlers)
#   CLUSTER_SCRAPE_INTERVAL  Prometheus' scrape and rule interval (default 5s)
#   CLUSTER_TIMEOUT    seconds to wait for each process to answer (default 60)
# Both `up` and `down` are idempotent. A pid file is trusted only while its process runs with a
# command line naming CLUSTER_DIR, so a reused pid is never signalled. Everything listens on
# 127.0.0.1 only; the API is open (api.allow_open) until a token is made.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/infsched-cluster}
CLUSTER_STORE_URL=${CLUSTER_STORE_URL:-mysql://root@127.0.0.1:3306/infsched_cluster}
CLUSTER_PORTS=${CLUSTER_PORTS:-19464 19465 18464 19090}
CLUSTER_RUN_ARGS=${CLUSTER_RUN_ARGS:---demo}
CLUSTER_SCRAPE_INTERVAL=${CLUSTER_SCRAPE_INTERVAL:-5s}
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-60}
BIN=${INFSCHED_BIN:-$ROOT/.venv/bin/infinite-scheduler}
PROMETHEUS=${PROMETHEUS:-prometheus}
read -r METRICS1 METRICS2 API_PORT PROM_PORT <<<"$CLUSTER_PORTS"
PROCESSES=(engine-1 engine-2 api prometheus)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

pid_file() { echo "$CLUSTER_DIR/$1.pid"; }
log_file() { echo "$CLUSTER_DIR/$1.log"; }

port_of() {
    case $1 in
        engine-1) echo "$METRICS1" ;;
        engine-2) echo "$METRICS2" ;;
        api) echo "$API_PORT" ;;
        prometheus) echo "$PROM_PORT" ;;
    esac
}

# What answers when the process is up: the metrics page, the API's /health, Prometheus' ready.
probe_url() {
    local port
    port=$(port_of "$1")
    case $1 in
        engine-*) echo "http://127.0.0.1:$port/metrics" ;;
        api) echo "http://127.0.0.1:$port/health" ;;
        prometheus) echo "http://127.0.0.1:$port/-/ready" ;;
    esac
}

# The pid of a process this CLUSTER_DIR started and that still runs; nothing otherwise.
running_pid() {
    local file pid state
    file=$(pid_file "$1")
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/" || return 1
    echo "$pid"
}

answers() { curl -fsS -o /dev/null --max-time 2 "$(probe_url "$1")" 2>/dev/null; }

write_node_config() {
    local n=$1 port=$2
    cat >"$CLUSTER_DIR/engine-$n.toml" <<EOF
# Written by scripts/cluster.sh up; rewritten on every up.
node_id = "cluster-$n"
metrics_port = $port
metrics_host = "127.0.0.1"

[store]
url = "$CLUSTER_STORE_URL"

[api]
port = 0    # the API runs alone (the api process), as in docker/compose.yaml

[categories.reports]   # no demo job is in it: it shows the dashboard's category series
concurrency = 10
EOF
}

write_configs() {
    mkdir -p "$CLUSTER_DIR/prometheus-data"
    write_node_config 1 "$METRICS1"
    write_node_config 2 "$METRICS2"
    cat >"$CLUSTER_DIR/api.toml" <<EOF
# Written by scripts/cluster.sh up. Open (no token) while none is stored, on 127.0.0.1 only.
metrics_port = 0

[store]
url = "$CLUSTER_STORE_URL"

[api]
port = $API_PORT
host = "127.0.0.1"
allow_open = true
EOF
    cat >"$CLUSTER_DIR/prometheus.yml" <<EOF
# Written by scripts/cluster.sh up: docker/prometheus/prometheus.yml with local targets.
global:
  scrape_interval: $CLUSTER_SCRAPE_INTERVAL
  evaluation_interval: $CLUSTER_SCRAPE_INTERVAL
rule_files:
  - $ROOT/docker/prometheus/alerts.yml
scrape_configs:
  - job_name: infinite-scheduler
    static_configs:
      - targets: ["127.0.0.1:$METRICS1", "127.0.0.1:$METRICS2"]
EOF
}

command_of() {
    case $1 in
        engine-1 | engine-2)
            # shellcheck disable=SC2086  # CLUSTER_RUN_ARGS is several words on purpose
            echo "$BIN" run --config "$CLUSTER_DIR/$1.toml" $CLUSTER_RUN_ARGS ;;
        api) echo "$BIN" api --config "$CLUSTER_DIR/api.toml" ;;
        prometheus)
            echo "$PROMETHEUS" --config.file="$CLUSTER_DIR/prometheus.yml" \
                --storage.tsdb.path="$CLUSTER_DIR/prometheus-data" \
                --web.listen-address="127.0.0.1:$PROM_PORT" ;;
    esac
}

start() {
    local name=$1 pid
    if pid=$(running_pid "$name"); then
        log "$name already running (pid $pid)"
        return
    fi
    # shellcheck disable=SC2046  # the command's words, none with spaces (paths are ours)
    setsid $(command_of "$name") </dev/null >>"$(log_file "$name")" 2>&1 &
    echo $! >"$(pid_file "$name")"
    log "$name started (pid $!), log $(log_file "$name")"
}

wait_answering() {
    local name=$1 deadline=$((SECONDS + CLUSTER_TIMEOUT))
    until answers "$name"; do
        if ! running_pid "$name" >/dev/null; then
            tail -n 20 "$(log_file "$name")" >&2 || true
            die "$name exited; its log is above"
        fi
        ((SECONDS < deadline)) || die "$name does not answer $(probe_url "$name") after ${CLUSTER_TIMEOUT} s"
        sleep 0.3
    done
    log "$name answers $(probe_url "$name")"
}

up() {
    [[ -x $BIN ]] || die "$BIN not found: run make install first"
    command -v "$PROMETHEUS" >/dev/null || die "$PROMETHEUS not found: run make prometheus-tools"
    write_configs
    "$BIN" store init --config "$CLUSTER_DIR/engine-1.toml" >&2
    local name
    for name in "${PROCESSES[@]}"; do
        start "$name"
    done
    for name in "${PROCESSES[@]}"; do
        wait_answering "$name"
    done
}

stop() {
    local name=$1 pid deadline
    pid=$(running_pid "$name") || { rm -f "$(pid_file "$name")"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while running_pid "$name" >/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if running_pid "$name" >/dev/null; then
        log "$name (pid $pid) still running after 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while running_pid "$name" >/dev/null; do sleep 0.1; done
    fi
    rm -f "$(pid_file "$name")"
    log "$name stopped (pid $pid)"
}

down() {
    local name
    for name in prometheus api engine-2 engine-1; do
        stop "$name"
    done
}

status() {
    local name pid state
    for name in "${PROCESSES[@]}"; do
        pid=$(running_pid "$name") || pid="-"
        state="not answering"
        answers "$name" && state="answering"
        printf '%-10s pid %-7s port %-5s %s %s\n' "$name" "$pid" "$(port_of "$name")" "$state" "$(probe_url "$name")"
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: scripts/cluster.sh up|down|status" ;;
esac
