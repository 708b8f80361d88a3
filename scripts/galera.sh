#!/usr/bin/env bash
# A three-node MariaDB Galera cluster on 127.0.0.1 for development and tests (issue 13).
#
#   scripts/galera.sh up        bootstrap (or rejoin) all three nodes; wait until all are Synced
#   scripts/galera.sh down      stop every node and anything they spawned; nothing left listening
#   scripts/galera.sh status    one line per node: pid, state, ready, cluster size
#   scripts/galera.sh kill N    kill -9 node N (a crash, for the failover tests)
#   scripts/galera.sh start N   restart node N and wait until it has rejoined (IST or SST), Synced
#   scripts/galera.sh purge     down, then delete ${GALERA_DIR}
#
# Node N (1..3): client port 331N, group port 457N, IST port 458N, SST (rsync) port 459N; its
# datadir, socket, pid files, config and error log live in ${GALERA_DIR:-/tmp/infsched-galera}/nN.
# A second cluster beside the first (two checkouts testing at once) takes GALERA_PORT_OFFSET
# (added to every port) and a GALERA_DIR of its own. Commands on one GALERA_DIR run one at a
# time (flock), so two test sessions cannot interleave an up with a down.
# Data is kept across down/up: `up` with no node running bootstraps from the node whose
# grastate.dat says safe_to_bootstrap (the last one stopped cleanly), or after a crash of all
# three from the node with the highest recovered seqno. A crashed node is evicted after 3 s
# (evs.suspect_timeout; Galera's default is 5 s) so that failover tests wait less. Uses only what Debian's mariadb-server
# and galera-4 packages install (mariadb-install-db, mariadbd, libgalera_smm.so, rsync); runs
# as root, mariadbd drops to --user=mysql.
set -euo pipefail

GALERA_DIR=${GALERA_DIR:-/tmp/infsched-galera}
GALERA_PROVIDER=${GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
GALERA_TIMEOUT=${GALERA_TIMEOUT:-120}   # seconds to wait for a node to be Synced
GALERA_PORT_OFFSET=${GALERA_PORT_OFFSET:-0}
NODES=(1 2 3)

log() { printf 'galera: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

node_dir() { echo "$GALERA_DIR/n$1"; }
client_port() { echo $((3310 + GALERA_PORT_OFFSET + $1)); }
group_port() { echo $((4570 + GALERA_PORT_OFFSET + $1)); }
ist_port() { echo $((4580 + GALERA_PORT_OFFSET + $1)); }
sst_port() { echo $((4590 + GALERA_PORT_OFFSET + $1)); }
node_ports() { echo "$(client_port "$1") $(group_port "$1") $(ist_port "$1") $(sst_port "$1")"; }
CLUSTER_ADDRESS="gcomm://127.0.0.1:$(group_port 1),127.0.0.1:$(group_port 2),127.0.0.1:$(group_port 3)"

# True while `pid` runs (a zombie awaiting its reaper does not count).
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}
launch_pid_file() { echo "$(node_dir "$1")/launch.pid"; }

check_node() {
    [[ "${1:-}" =~ ^[123]$ ]] || die "node must be 1, 2 or 3, got '${1:-}'"
}

write_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/data"
    cat >"$dir/my.cnf" <<EOF
# Written by scripts/galera.sh; rewritten on every start.
[mysqld]
user = mysql
basedir = /usr
datadir = $dir/data
socket = $dir/mysqld.sock
pid-file = $dir/mysqld.pid
log-error = $dir/error.log
bind-address = 127.0.0.1
port = $(client_port "$n")
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 300
performance_schema = OFF
innodb_buffer_pool_size = 64M
innodb_log_file_size = 16M
innodb_flush_log_at_trx_commit = 2
default_storage_engine = InnoDB
binlog_format = ROW
innodb_autoinc_lock_mode = 2
wsrep_on = ON
wsrep_provider = $GALERA_PROVIDER
wsrep_cluster_name = infsched
wsrep_cluster_address = $CLUSTER_ADDRESS
wsrep_node_name = n$n
wsrep_node_address = 127.0.0.1:$(group_port "$n")
wsrep_node_incoming_address = 127.0.0.1:$(client_port "$n")
wsrep_provider_options = "gmcast.listen_addr=tcp://127.0.0.1:$(group_port "$n");ist.recv_addr=127.0.0.1:$(ist_port "$n");gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S"
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:$(sst_port "$n")
EOF
    chown -R mysql:mysql "$dir"
}

# The pid of node N's mariadbd, if it is running (our launch record, else mariadbd's own).
node_pid() {
    local n=$1 f pid
    for f in "$(launch_pid_file "$n")" "$(node_dir "$n")/mysqld.pid"; do
        [[ -s $f ]] || continue
        pid=$(<"$f")
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(node_dir "$n")/my.cnf"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

sql() {  # sql N STATEMENT: run through node N's socket, tab-separated, no headers
    mariadb --no-defaults --connect-timeout=2 -S "$(node_dir "$1")/mysqld.sock" -uroot -N -B -e "$2" 2>/dev/null
}

wsrep_status() {  # prints "state ready size" for node N, or fails
    local out
    out=$(sql "$1" "SHOW GLOBAL STATUS WHERE Variable_name IN
        ('wsrep_local_state_comment','wsrep_ready','wsrep_cluster_size')") || return 1
    awk '{v[$1]=$2} END {print v["wsrep_local_state_comment"], v["wsrep_ready"], v["wsrep_cluster_size"]}' <<<"$out"
}

is_synced() {
    local s
    s=$(wsrep_status "$1") || return 1
    [[ $s == "Synced ON "* ]]
}

# Listening sockets on node N's ports, as "port pid" lines (pid empty when ss cannot tell).
listeners() {
    local n=$1 p
    for p in $(node_ports "$n"); do
        ss -Hltnp "sport = :$p" 2>/dev/null | while read -r line; do
            echo "$p $(grep -o 'pid=[0-9]*' <<<"$line" | head -1 | cut -d= -f2)"
        done
    done
}

# Refuses to start node N over a port some other program holds.
check_ports_free() {
    local n=$1 port pid
    while read -r port pid; do
        [[ -n $port ]] || continue
        die "node $n: port $port is already in use by pid ${pid:-?} ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)); stop it or run 'scripts/galera.sh down'"
    done < <(listeners "$n")
}

grastate_field() {  # grastate_field N FIELD
    local f
    f="$(node_dir "$1")/data/grastate.dat"
    [[ -f $f ]] || return 1
    awk -v k="$2:" '$1 == k {print $2}' "$f"
}

# After a crash grastate.dat says seqno -1; mariadbd --wsrep-recover reads the position from
# InnoDB so that the restart can ask for IST instead of a full SST. Prints uuid:seqno or nothing.
recover_position() {
    local n=$1 dir out
    dir=$(node_dir "$n")
    [[ -d $dir/data/mysql ]] || return 0
    out=$(mariadbd --defaults-file="$dir/my.cnf" --wsrep-recover --log-error="$dir/recover.log" 2>&1 || true)
    grep -o 'Recovered position: [^ ]*' "$dir/recover.log" 2>/dev/null | tail -1 | awk '{print $3}'
    rm -f "$dir/recover.log"
    : "$out"
}

start_position() {  # the position to pass to mariadbd for node N, or nothing
    local n=$1 uuid seqno
    uuid=$(grastate_field "$n" uuid) || return 0
    seqno=$(grastate_field "$n" seqno) || return 0
    if [[ $seqno == "-1" ]]; then
        recover_position "$n"
    fi
}

launch() {  # launch N [extra mariadbd args...]: start node N in the background
    local n=$1 dir pos
    shift
    dir=$(node_dir "$n")
    write_config "$n"
    check_ports_free "$n"
    pos=$(start_position "$n")
    [[ -n $pos ]] && set -- "$@" "--wsrep_start_position=$pos"
    log "starting node $n (port $(client_port "$n"))${*:+ with $*}"
    rm -f "$dir/mysqld.pid" "$dir/launch.pid"
    # fd 9 is the command lock: the server must not hold it after this command ends.
    setsid mariadbd --defaults-file="$dir/my.cnf" "$@" </dev/null >>"$dir/error.log" 2>&1 9>&- &
    echo $! >"$(launch_pid_file "$n")"
}

fail_with_logs() {
    local n
    log "$1"
    for n in "${NODES[@]}"; do
        [[ -f $(node_dir "$n")/error.log ]] || continue
        printf '\n----- node %s: %s (last 25 lines) -----\n' "$n" "$(node_dir "$n")/error.log" >&2
        tail -n 25 "$(node_dir "$n")/error.log" >&2
    done
    exit 1
}

wait_synced() {  # wait_synced N...: until each node is Synced and ready, or fail with the logs
    local deadline=$((SECONDS + GALERA_TIMEOUT)) n
    for n in "$@"; do
        until is_synced "$n"; do
            node_pid "$n" >/dev/null || fail_with_logs "node $n exited before it was Synced"
            ((SECONDS < deadline)) || fail_with_logs "node $n not Synced after ${GALERA_TIMEOUT}s ($(wsrep_status "$n" || echo 'no answer'))"
            sleep 0.5
        done
    done
}

# Which node bootstraps a cluster that has no running member: a fresh one is n1; otherwise the
# node Galera marked safe_to_bootstrap, else (all crashed) the highest recovered seqno.
bootstrap_node() {
    local n best=1 best_seqno=-2 seqno pos
    [[ -f $(node_dir 1)/data/grastate.dat || -f $(node_dir 2)/data/grastate.dat || -f $(node_dir 3)/data/grastate.dat ]] || { echo 1; return; }
    for n in "${NODES[@]}"; do
        if [[ $(grastate_field "$n" safe_to_bootstrap || true) == 1 ]]; then
            echo "$n"
            return
        fi
    done
    for n in "${NODES[@]}"; do
        seqno=$(grastate_field "$n" seqno || echo -2)
        if [[ $seqno == "-1" ]]; then
            pos=$(recover_position "$n")
            seqno=${pos##*:}
            seqno=${seqno:--2}
        fi
        if ((seqno > best_seqno)); then best=$n; best_seqno=$seqno; fi
    done
    echo "$best"
}

bootstrap() {
    local n f
    n=$(bootstrap_node)
    f="$(node_dir "$n")/data/grastate.dat"
    if [[ ! -d $(node_dir "$n")/data/mysql ]]; then
        write_config "$n"
        log "initialising node $n's datadir"
        mariadb-install-db --defaults-file="$(node_dir "$n")/my.cnf" --user=mysql \
            --auth-root-authentication-method=normal --skip-test-db \
            >"$(node_dir "$n")/install.log" 2>&1 || { cat "$(node_dir "$n")/install.log" >&2; die "mariadb-install-db failed for node $n"; }
    fi
    [[ -f $f ]] && sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 1/' "$f"
    launch "$n" --wsrep-new-cluster
    wait_synced "$n"
}

cmd_up() {
    local n running=0
    mkdir -p "$GALERA_DIR"
    chmod 755 "$GALERA_DIR"
    for n in "${NODES[@]}"; do
        node_pid "$n" >/dev/null && running=1
    done
    ((running)) || bootstrap
    for n in "${NODES[@]}"; do
        node_pid "$n" >/dev/null || launch "$n"
    done
    wait_synced "${NODES[@]}"
    cmd_status
}

stop_node() {  # stop_node N [signal]: stop node N, its SST helpers, and whatever holds its ports
    local n=$1 sig=${2:-TERM} pid deadline port f
    if pid=$(node_pid "$n"); then
        kill "-$sig" "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 60))
        while alive "$pid"; do
            ((SECONDS < deadline)) || { log "node $n (pid $pid) ignores SIG$sig; killing"; kill -9 "$pid" 2>/dev/null || true; }
            sleep 0.2
        done
    fi
    # An interrupted SST leaves its rsync daemon (pid file in the datadir) and its script behind.
    for f in "$(node_dir "$n")"/data/rsync_sst.pid "$(node_dir "$n")"/data/stunnel.pid; do
        [[ -s $f ]] || continue
        pid=$(<"$f")
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
    # Last resort: a process of ours (its command line names this node's directory) on our ports.
    while read -r port pid; do
        [[ -n $pid ]] || continue
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(node_dir "$n")"; then
            kill -9 "$pid" 2>/dev/null || true
        else
            log "node $n: port $port is held by pid $pid, which is not ours; left alone"
        fi
    done < <(listeners "$n")
    rm -f "$(launch_pid_file "$n")"
}

cmd_down() {
    local n
    # The last node stopped cleanly is the one grastate.dat marks safe_to_bootstrap: stop n1 last.
    for n in 3 2 1; do
        stop_node "$n"
    done
    for n in "${NODES[@]}"; do
        if [[ -n $(listeners "$n") ]]; then
            die "node $n: something still listens on its ports after down"
        fi
    done
    log "down"
}

cmd_status() {
    local n pid st
    for n in "${NODES[@]}"; do
        if pid=$(node_pid "$n"); then
            st=$(wsrep_status "$n" || echo "starting - -")
            read -r state ready size <<<"$st"
            printf 'n%s 127.0.0.1:%s pid=%s state=%s ready=%s cluster_size=%s\n' \
                "$n" "$(client_port "$n")" "$pid" "$state" "$ready" "$size"
        else
            printf 'n%s 127.0.0.1:%s stopped\n' "$n" "$(client_port "$n")"
        fi
    done
}

cmd_kill() {
    local n=$1 pid
    check_node "$n"
    pid=$(node_pid "$n") || die "node $n is not running"
    kill -9 "$pid"
    while alive "$pid"; do sleep 0.1; done
    rm -f "$(launch_pid_file "$n")"
    log "node $n (pid $pid) killed"
}

cmd_start() {
    local n=$1 m others=0
    check_node "$n"
    if ! node_pid "$n" >/dev/null; then
        for m in "${NODES[@]}"; do
            [[ $m != "$n" ]] && node_pid "$m" >/dev/null && others=1
        done
        ((others)) || die "no other node is running for node $n to join; use 'scripts/galera.sh up'"
        stop_node "$n"  # leftovers of a crash (an SST rsync daemon) would hold its ports
        launch "$n"
    fi
    wait_synced "$n"
    cmd_status
}

cmd_purge() {
    cmd_down
    rm -rf "$GALERA_DIR"
    log "removed $GALERA_DIR"
}

[[ $(id -u) == 0 ]] || die "run as root (mariadbd is started with --user=mysql)"
[[ $GALERA_PORT_OFFSET =~ ^[0-9]+$ ]] || die "GALERA_PORT_OFFSET must be a number, got '$GALERA_PORT_OFFSET'"
if [[ ${1:-} != status ]]; then
    mkdir -p "$(dirname "$GALERA_DIR")"
    exec 9>>"${GALERA_DIR%/}.lock"
    flock -w 900 9 || die "another scripts/galera.sh holds ${GALERA_DIR%/}.lock"
fi
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:-}" ;;
    start) cmd_start "${2:-}" ;;
    purge) cmd_purge ;;
    *) die "usage: $0 up|down|status|kill N|start N|purge" ;;
esac
