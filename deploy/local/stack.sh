#!/usr/bin/env bash
# deploy/local/stack.sh - exectrack's local stack, without Docker.
#
# Runs a REAL Apache Kafka 4.x broker (single KRaft node, jars fetched once
# from Maven Central with Maven) and a PRIVATE MariaDB instance (Debian
# packages; own datadir/socket/port, not the system service), both bound to
# 127.0.0.1 only. State (data, logs, pid files) lives in $EXECTRACK_LOCAL_DIR,
# the Kafka jars in $EXECTRACK_CACHE_DIR (shared by every clone).
#
# Run `deploy/local/stack.sh help` for the commands and settings.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
readonly SCRIPT_DIR REPO_ROOT
readonly HOST=127.0.0.1

# ----------------------------------------------------------------- settings --

abspath() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

LOCAL_DIR=$(abspath "${EXECTRACK_LOCAL_DIR:-$REPO_ROOT/.local}")
CACHE_DIR=$(abspath "${EXECTRACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/exectrack}")
KAFKA_VERSION=${EXECTRACK_KAFKA_VERSION:-4.1.1}
KAFKA_PORT=${EXECTRACK_LOCAL_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${EXECTRACK_LOCAL_KAFKA_CONTROLLER_PORT:-9093}
DB_PORT=${EXECTRACK_LOCAL_DB_PORT:-3306}
KAFKA_HEAP=${EXECTRACK_LOCAL_KAFKA_HEAP:--Xms256m -Xmx768m}

readonly KAFKA_READY_TIMEOUT=90   # seconds
readonly DB_READY_TIMEOUT=60      # seconds
readonly STOP_TIMEOUT=30          # seconds of grace after TERM / shutdown

readonly DB_NAME=exectrack DB_USER=exectrack DB_PASSWORD=exectrack

# Kafka: jar cache (shared) and state (per clone).
KAFKA_CACHE=$CACHE_DIR/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_CACHE/libs
KAFKA_STAMP=$KAFKA_CACHE/.complete
KAFKA_STATE=$LOCAL_DIR/kafka
KAFKA_DATA=$KAFKA_STATE/data
KAFKA_LOGS=$KAFKA_STATE/logs
KAFKA_LOG=$KAFKA_LOGS/server.log
KAFKA_OUT=$KAFKA_LOGS/kafka.out
KAFKA_PROPS=$KAFKA_STATE/server.properties
KAFKA_ADMIN_PROPS=$KAFKA_STATE/admin.properties
KAFKA_PID=$KAFKA_STATE/kafka.pid
KAFKA_CLUSTER_ID=$KAFKA_STATE/cluster.id

# MariaDB: everything under the state dir.
DB_STATE=$LOCAL_DIR/mariadb
DB_DATA=$DB_STATE/data
DB_CNF=$DB_STATE/my.cnf
DB_PID=$DB_STATE/mariadbd.pid
DB_LOG=$DB_STATE/error.log
DB_OUT=$DB_STATE/mariadbd.out
DB_SOCKET=$DB_STATE/mariadbd.sock
# A unix socket path is limited to ~107 bytes: fall back to a short one.
if ((${#DB_SOCKET} > 100)); then
    DB_SOCKET=${TMPDIR:-/tmp}/exectrack-mariadb-$(id -u)-$(printf '%s' "$LOCAL_DIR" | cksum | cut -d' ' -f1).sock
fi

# ------------------------------------------------------------------ helpers --

say() { printf 'stack: %s\n' "$*" >&2; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
err() { printf 'stack: error: %s\n' "$*" >&2; }
die() {
    err "$*"
    exit 1
}

CLEANUP=()
cleanup() {
    local p
    for p in ${CLEANUP[@]+"${CLEANUP[@]}"}; do
        rm -rf -- "$p"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check_port_setting() { # name value
    if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        die "$1=$2 is not a TCP port number"
    fi
}

# Serialise up/down/reset of one state dir (fd 9) and jar downloads into one
# cache (fd 8). Both fds are closed in the daemons we start (see `8>&- 9>&-`),
# otherwise a running broker would hold the lock forever.
lock_state() {
    mkdir -p "$LOCAL_DIR"
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>>"$LOCAL_DIR/.stack.lock"
    if ! flock -n 9; then
        say "another stack.sh is working on $LOCAL_DIR; waiting for it..."
        flock -w 600 9 || die "gave up waiting for the lock on $LOCAL_DIR/.stack.lock"
    fi
}

lock_cache() {
    command -v flock >/dev/null 2>&1 || return 0
    exec 8>>"$CACHE_DIR/.kafka-$KAFKA_VERSION.lock"
    if ! flock -n 8; then
        say "another stack.sh is fetching Kafka $KAFKA_VERSION into $CACHE_DIR; waiting for it..."
        flock -w 900 8 || die "gave up waiting for the lock on $CACHE_DIR/.kafka-$KAFKA_VERSION.lock"
    fi
}

with_timeout() { # seconds cmd...
    local secs=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$secs" "$@"
    else
        "$@"
    fi
}

# render TEMPLATE OUTPUT NAME=VALUE...: replace every @NAME@ in TEMPLATE.
render() {
    local template=$1 out=$2 kv name value
    shift 2
    local -a expr=()
    for kv in "$@"; do
        name=${kv%%=*}
        value=${kv#*=}
        value=${value//\\/\\\\}
        value=${value//|/\\|}
        value=${value//&/\\&}
        expr+=(-e "s|@${name}@|${value}|g")
    done
    sed "${expr[@]}" "$template" >"$out.tmp"
    if grep -nE '@[A-Z][A-Z0-9_]*@' "$out.tmp" >&2; then
        rm -f "$out.tmp"
        die "unreplaced placeholder(s) in $template (shown above)"
    fi
    mv -f "$out.tmp" "$out"
}

# Is PID alive, and is its command line one of ours (contains every NEEDLE)?
# Guards against a stale pid file whose pid was reused by something else.
# A zombie has an empty command line, so it does not count as running.
is_ours() { # pid needle...
    local pid=$1 cmd needle
    shift
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    else
        cmd=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
    fi
    [[ -n $cmd ]] || return 1
    for needle in "$@"; do
        [[ $cmd == *"$needle"* ]] || return 1
    done
}

# Is PID alive (and not a zombie)? For a child we have just started, whose
# command line is still ours-to-be (fork before exec), this is the check.
alive() {
    local state=""
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r /proc/$1/stat ]]; then
        state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || true
    fi
    [[ $state != Z ]]
}

read_pid() { # pidfile -> pid (or nothing)
    local pid=""
    if [[ -f $1 ]]; then
        read -r pid <"$1" 2>/dev/null || true
    fi
    printf '%s' "$pid"
}

# Something (anything) listening on TCP PORT?
port_busy() {
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
    fi
}

port_owner() { # port -> description of the listener(s), best effort
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /' || true
    fi
}

die_port_busy() { # what port env_var [hint]
    err "$1 cannot start: port $HOST:$2 is already in use by another process:"
    port_owner "$2" >&2
    err "stop that process, or choose another port, e.g. $3=$(($2 + 10000)) $0 up"
    [[ -z ${4:-} ]] || printf '  (%s)\n' "$4" >&2
    exit 1
}

wait_gone() { # seconds pid needle...
    local secs=$1 pid=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    while is_ours "$pid" "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# TERM, wait up to STOP_TIMEOUT, then KILL.
terminate() { # name pid needle...
    local name=$1 pid=$2
    shift 2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$STOP_TIMEOUT" "$pid" "$@"; then
        warn "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone 10 "$pid" "$@" || die "$name (pid $pid) survived SIGKILL"
    fi
}

show_tail() { # lines file...
    local n=$1 f
    shift
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '----- last %s lines of %s -----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2
    done
}

# --------------------------------------------------------------------- java --

JAVA=""
find_java() {
    [[ -z $JAVA ]] || return 0
    local candidate="" version=""
    if [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME}/bin/java ]]; then
        candidate=$JAVA_HOME/bin/java
    elif command -v java >/dev/null 2>&1; then
        candidate=$(command -v java)
    else
        die "Java 17 or newer is needed to run Kafka, and no 'java' was found (PATH, JAVA_HOME).
  On Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven"
    fi
    version=$("$candidate" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = *//p') || true
    version=${version#1.} # Java 8 says 1.8
    version=${version%%[!0-9]*}
    if [[ -z $version ]]; then
        die "could not tell the Java version of $candidate; Kafka needs Java 17 or newer.
  On Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven"
    fi
    if ((version < 17)); then
        die "Kafka $KAFKA_VERSION needs Java 17 or newer, but $candidate is Java $version.
  On Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven (then set JAVA_HOME or update-alternatives)"
    fi
    JAVA=$candidate
}

# The java command line that runs one of the Kafka command-line classes
# (StorageTool, TopicCommand...): small heap, quick-start JIT (short-lived).
kafka_tool_cmd() {
    KAFKA_TOOL=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/tools-log4j2.properties"
        -cp "$KAFKA_LIBS/*")
}
KAFKA_TOOL=()

kafka_tool() {
    kafka_tool_cmd
    "${KAFKA_TOOL[@]}" "$@"
}

# --------------------------------------------------------------- kafka jars --

kafka_jars_ready() {
    [[ -f $KAFKA_STAMP && -f $KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar ]]
}

ensure_kafka_jars() {
    if kafka_jars_ready; then
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    lock_cache
    if kafka_jars_ready; then # fetched by another run while we waited
        return 0
    fi
    find_java
    if ! command -v mvn >/dev/null 2>&1; then
        die "Maven ('mvn') is needed once, to download the Kafka $KAFKA_VERSION jars into $KAFKA_CACHE, and it was not found.
  On Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven"
    fi
    # Leftovers of an interrupted download (we hold the lock: nobody uses them).
    rm -rf "$CACHE_DIR/.kafka-$KAFKA_VERSION.partial."*
    local tmp count size
    tmp=$(mktemp -d "$CACHE_DIR/.kafka-$KAFKA_VERSION.partial.XXXXXX")
    CLEANUP+=("$tmp")
    say "fetching the Apache Kafka $KAFKA_VERSION jars with Maven (once, about 55 MB) into $KAFKA_CACHE ..."
    if ! (cd "$tmp" && mvn -q -B -Dstyle.color=never -f "$SCRIPT_DIR/kafka/pom.xml" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1); then
        # The first real [ERROR] line says what failed; the rest is boilerplate.
        sed 's/\x1b\[[0-9;]*m//g' "$tmp/mvn.log" | grep -E '^\[ERROR\] [[:upper:]]' |
            grep -vE '^\[ERROR\] (To see the full|Re-run Maven|For more information|\[Help)' | head -n 3 >&2 || true
        die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (output above).
  Is EXECTRACK_KAFKA_VERSION=$KAFKA_VERSION a released Kafka version, and can Maven reach its repository (try: mvn -v; ~/.m2/settings.xml)?"
    fi
    if [[ ! -f $tmp/libs/kafka_2.13-$KAFKA_VERSION.jar ]]; then
        show_tail 40 "$tmp/mvn.log"
        die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in the result; nothing was cached"
    fi
    count=$(find "$tmp/libs" -name '*.jar' | wc -l)
    size=$(du -sh "$tmp/libs" | cut -f1)
    rm -f "$tmp/mvn.log"
    printf 'kafka_version=%s\njars=%s\nsize=%s\nfetched=%s\n' \
        "$KAFKA_VERSION" "$count" "$size" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp/.complete"
    chmod 755 "$tmp"
    # Atomic publish: the cache dir appears complete (stamp included) or not at all.
    rm -rf "$KAFKA_CACHE"
    mv "$tmp" "$KAFKA_CACHE"
    say "cached $count jars ($size) in $KAFKA_LIBS"
}

# -------------------------------------------------------------------- kafka --

kafka_running_pid() {
    local pid
    pid=$(read_pid "$KAFKA_PID")
    is_ours "$pid" kafka.Kafka "$KAFKA_PROPS" || return 1
    printf '%s\n' "$pid"
}

kafka_answers() {
    kafka_tool_cmd
    with_timeout 40 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$HOST:$KAFKA_PORT" \
        --command-config "$KAFKA_ADMIN_PROPS" --list >/dev/null 2>"$KAFKA_STATE/ready-check.err"
}

kafka_failed() { # message
    show_tail 30 "$KAFKA_LOG" "$KAFKA_OUT"
    die "$1 (logs: $KAFKA_LOGS)"
}

wait_kafka_ready() { # pid
    local pid=$1 deadline=$((SECONDS + KAFKA_READY_TIMEOUT)) start=$SECONDS
    say "waiting for Kafka to answer on $HOST:$KAFKA_PORT (up to ${KAFKA_READY_TIMEOUT}s)..."
    while :; do
        if ! alive "$pid"; then
            rm -f "$KAFKA_PID"
            kafka_failed "Kafka (pid $pid) exited during startup"
        fi
        # Cheap check first (no JVM), then a real metadata request.
        if port_busy "$KAFKA_PORT" && kafka_answers; then
            say "Kafka is ready ($((SECONDS - start))s)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_tail 10 "$KAFKA_STATE/ready-check.err"
            kafka_failed "Kafka (pid $pid) did not answer a metadata request on $HOST:$KAFKA_PORT within ${KAFKA_READY_TIMEOUT}s; it is still running: see '$0 logs kafka', or '$0 down kafka'"
        fi
        sleep 1
    done
}

format_kafka_storage() {
    local id
    # Formatted already? (A changed controller port is fine: the node updates
    # its own voter endpoint on start.)
    if [[ -f $KAFKA_DATA/meta.properties ]]; then
        return 0
    fi
    if [[ -d $KAFKA_DATA ]] && [[ -n $(ls -A "$KAFKA_DATA") ]]; then
        warn "$KAFKA_DATA has files but no meta.properties (interrupted format?); wiping it"
        rm -rf "$KAFKA_DATA"
    fi
    mkdir -p "$KAFKA_DATA"
    if [[ ! -s $KAFKA_CLUSTER_ID ]]; then
        kafka_tool kafka.tools.StorageTool random-uuid >"$KAFKA_CLUSTER_ID.tmp" ||
            die "kafka.tools.StorageTool random-uuid failed"
        mv -f "$KAFKA_CLUSTER_ID.tmp" "$KAFKA_CLUSTER_ID"
    fi
    id=$(tr -d '[:space:]' <"$KAFKA_CLUSTER_ID")
    say "formatting Kafka storage (cluster id $id) in $KAFKA_DATA"
    if ! kafka_tool kafka.tools.StorageTool format --standalone -t "$id" \
        -c "$KAFKA_PROPS" >"$KAFKA_LOGS/format.log" 2>&1; then
        show_tail 30 "$KAFKA_LOGS/format.log"
        die "formatting the Kafka storage failed (output above)"
    fi
}

render_kafka_props() { # output
    render "$SCRIPT_DIR/kafka/server.properties.in" "$1" \
        HOST="$HOST" KAFKA_PORT="$KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" KAFKA_DATA_DIR="$KAFKA_DATA"
}

# A running service keeps the config it was started with. Warn when the
# current settings/template would give another one (changed port...).
warn_if_config_changed() { # name current_file render_function
    local want
    want=$(mktemp)
    CLEANUP+=("$want")
    "$3" "$want"
    if ! cmp -s "$want" "$2"; then
        warn "$1 is running with an older configuration than the current settings/template would give:"
        diff "$2" "$want" | grep '^[<>]' | sed 's/^/    /' >&2 || true
        warn "to apply it: $0 down $1 && $0 up $1"
    fi
}

start_kafka() {
    local pid stale
    if pid=$(kafka_running_pid); then
        warn_if_config_changed kafka "$KAFKA_PROPS" render_kafka_props
        if port_busy "$KAFKA_PORT"; then
            say "Kafka already running (pid $pid)"
            return 0
        fi
        find_java
        wait_kafka_ready "$pid"
        return 0
    fi
    stale=$(read_pid "$KAFKA_PID")
    if [[ -n $stale ]]; then
        say "Kafka: stale pid file (pid $stale is not running: it crashed or was killed); starting it again"
        rm -f "$KAFKA_PID"
    fi

    ensure_kafka_jars
    find_java
    if port_busy "$KAFKA_PORT"; then
        die_port_busy Kafka "$KAFKA_PORT" EXECTRACK_LOCAL_KAFKA_PORT
    fi
    if port_busy "$KAFKA_CONTROLLER_PORT"; then
        die_port_busy "Kafka (controller listener)" "$KAFKA_CONTROLLER_PORT" EXECTRACK_LOCAL_KAFKA_CONTROLLER_PORT
    fi

    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    render_kafka_props "$KAFKA_PROPS"
    # Client settings of the readiness probe: fail fast, retry from here.
    printf '%s\n' 'request.timeout.ms=5000' 'default.api.timeout.ms=10000' \
        'socket.connection.setup.timeout.ms=2000' >"$KAFKA_ADMIN_PROPS"
    format_kafka_storage

    local -a heap
    read -r -a heap <<<"$KAFKA_HEAP"
    printf '\n===== %s: starting Kafka %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$KAFKA_VERSION" >>"$KAFKA_OUT"
    say "starting Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)"
    # setsid: own session, so neither Ctrl-C nor closing the terminal stops it.
    setsid nohup "$JAVA" "${heap[@]}" \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true \
        -Dkafka.logs.dir="$KAFKA_LOGS" \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
        </dev/null >>"$KAFKA_OUT" 2>&1 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$KAFKA_PID"
    wait_kafka_ready "$pid"
}

stop_kafka() {
    local pid stale
    if ! pid=$(kafka_running_pid); then
        stale=$(read_pid "$KAFKA_PID")
        if [[ -n $stale ]]; then
            say "Kafka not running (removing stale pid file of pid $stale)"
        else
            say "Kafka not running"
        fi
        rm -f "$KAFKA_PID"
        return 0
    fi
    say "stopping Kafka (pid $pid)..."
    terminate Kafka "$pid" kafka.Kafka "$KAFKA_PROPS"
    rm -f "$KAFKA_PID"
    say "Kafka stopped"
}

# ------------------------------------------------------------------ mariadb --

MARIADBD="" MARIADB_INSTALL_DB="" MARIADB_ADMIN="" MARIADB_CLIENT=""

find_bin() { # name -> path of an executable file; also looks in the sbin dirs a non-root PATH lacks
    local d
    local -a dirs
    IFS=: read -r -a dirs <<<"$PATH"
    for d in "${dirs[@]}" /usr/sbin /usr/local/sbin /sbin /usr/bin /usr/local/bin; do
        if [[ -n $d && -f $d/$1 && -x $d/$1 ]]; then
            printf '%s\n' "$d/$1"
            return 0
        fi
    done
    return 1
}

resolve_mariadb() {
    MARIADBD=$(find_bin mariadbd) &&
        MARIADB_INSTALL_DB=$(find_bin mariadb-install-db) &&
        MARIADB_ADMIN=$(find_bin mariadb-admin) &&
        MARIADB_CLIENT=$(find_bin mariadb)
}

ensure_mariadb_installed() {
    if resolve_mariadb; then
        return 0
    fi
    say "MariaDB server programs (mariadbd, mariadb-install-db, mariadb-admin, mariadb) not found: installing the Debian package mariadb-server"
    if ! find_bin apt-get >/dev/null; then
        die "MariaDB is not installed and there is no apt-get here to install it.
  Install MariaDB server 10.6 or newer with your system's package manager (it must provide mariadbd, mariadb-install-db, mariadb-admin, mariadb), then re-run: $0 up"
    fi
    local -a sudo=()
    if ((EUID != 0)); then
        if ! find_bin sudo >/dev/null; then
            die "MariaDB is not installed, and installing it needs root: you are not root and there is no sudo.
  Ask an administrator to run: apt-get update && apt-get install -y mariadb-server; then re-run: $0 up"
        fi
        sudo=(sudo)
        say "using sudo for apt-get (it may ask for your password)"
    fi
    local port_was_busy=0
    if port_busy "$DB_PORT"; then
        port_was_busy=1
    fi
    ${sudo[@]+"${sudo[@]}"} apt-get update ||
        die "apt-get update failed (output above); install mariadb-server by hand, then re-run: $0 up"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server ||
        die "apt-get install mariadb-server failed (output above); install it by hand, then re-run: $0 up"
    resolve_mariadb ||
        die "mariadb-server is installed but mariadbd/mariadb-install-db/mariadb-admin/mariadb are still not found"
    # Installing the package may start the SYSTEM MariaDB service on our port.
    # We run a private instance instead: stop the one the install just started.
    if ((port_was_busy == 0)) && port_busy "$DB_PORT"; then
        warn "installing mariadb-server started the system MariaDB service on port $DB_PORT; stopping it (this stack runs its own private instance)"
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            ${sudo[@]+"${sudo[@]}"} systemctl stop mariadb || true
            say "to keep it from starting at boot: systemctl disable mariadb"
        elif command -v service >/dev/null 2>&1; then
            ${sudo[@]+"${sudo[@]}"} service mariadb stop || true
        fi
    fi
    say "installed: $("$MARIADBD" --version)"
}

mariadb_running_pid() {
    local pid
    pid=$(read_pid "$DB_PID")
    is_ours "$pid" "--defaults-file=$DB_CNF" || return 1
    printf '%s\n' "$pid"
}

mariadb_ping() {
    with_timeout 10 "$MARIADB_ADMIN" --defaults-file="$DB_CNF" --connect-timeout=2 ping >/dev/null 2>&1
}

mariadb_sql() { # sql (as the OS user, through the socket: unix_socket auth)
    with_timeout 30 "$MARIADB_CLIENT" --defaults-file="$DB_CNF" --batch --skip-column-names -e "$1"
}

mariadb_failed() {
    show_tail 30 "$DB_LOG" "$DB_OUT"
    die "$1 (logs: $DB_LOG, $DB_OUT)"
}

init_mariadb_datadir() {
    if [[ -d $DB_DATA/mysql ]]; then
        return 0
    fi
    if [[ -d $DB_DATA ]] && [[ -n $(ls -A "$DB_DATA") ]]; then
        warn "$DB_DATA has files but no system tables (interrupted initialisation?); wiping it"
        rm -rf "$DB_DATA"
    fi
    mkdir -p "$DB_DATA"
    say "initialising the MariaDB data directory $DB_DATA"
    # root@localhost is authenticated by the unix socket: only this OS user
    # (through $DB_SOCKET) is MariaDB root; no password anywhere.
    if ! "$MARIADB_INSTALL_DB" --defaults-file="$DB_CNF" \
        --auth-root-authentication-method=socket --user="$(id -un)" \
        --skip-test-db --skip-name-resolve >"$DB_STATE/install-db.log" 2>&1 8>&- 9>&-; then
        show_tail 40 "$DB_STATE/install-db.log" "$DB_LOG"
        rm -rf "$DB_DATA"
        die "mariadb-install-db failed (output above)"
    fi
}

provision_mariadb() {
    local u
    local sql="CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    for u in "'$DB_USER'@'127.0.0.1'" "'$DB_USER'@'localhost'"; do
        sql+=" CREATE USER IF NOT EXISTS $u IDENTIFIED BY '$DB_PASSWORD';"
        # exectrack% also covers the test suite's throw-away exectrack_test_* databases.
        sql+=" GRANT ALL PRIVILEGES ON \`$DB_NAME%\`.* TO $u;"
    done
    mariadb_sql "$sql" || mariadb_failed "could not create the $DB_NAME database/user through $DB_SOCKET"
    # Check the path the application takes: TCP, password.
    if ! with_timeout 10 "$MARIADB_CLIENT" --no-defaults --protocol=TCP -h "$HOST" -P "$DB_PORT" \
        -u "$DB_USER" -p"$DB_PASSWORD" -e 'SELECT 1' "$DB_NAME" >/dev/null; then
        die "MariaDB is running but $DB_USER cannot log in over TCP at $HOST:$DB_PORT"
    fi
}

wait_mariadb_ready() { # pid
    local pid=$1 deadline=$((SECONDS + DB_READY_TIMEOUT)) start=$SECONDS
    say "waiting for MariaDB to answer on $DB_SOCKET (up to ${DB_READY_TIMEOUT}s)..."
    while :; do
        if mariadb_ping; then
            say "MariaDB is ready ($((SECONDS - start))s)"
            return 0
        fi
        if ! alive "$pid"; then
            rm -f "$DB_PID"
            mariadb_failed "MariaDB (pid $pid) exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            mariadb_failed "MariaDB (pid $pid) did not answer within ${DB_READY_TIMEOUT}s; it is still running: see '$0 logs mariadb', or '$0 down mariadb'"
        fi
        sleep 0.5
    done
}

render_db_cnf() { # output
    render "$SCRIPT_DIR/mariadb/my.cnf.in" "$1" \
        HOST="$HOST" DB_PORT="$DB_PORT" DB_SOCKET="$DB_SOCKET" DB_DATA_DIR="$DB_DATA" \
        DB_PID_FILE="$DB_PID" DB_ERROR_LOG="$DB_LOG"
}

start_mariadb() {
    local pid stale
    ensure_mariadb_installed
    if pid=$(mariadb_running_pid); then
        warn_if_config_changed mariadb "$DB_CNF" render_db_cnf
        if mariadb_ping; then
            say "MariaDB already running (pid $pid)"
        else
            wait_mariadb_ready "$pid"
        fi
        provision_mariadb
        return 0
    fi
    stale=$(read_pid "$DB_PID")
    if [[ -n $stale ]]; then
        say "MariaDB: stale pid file (pid $stale is not running: it crashed or was killed); starting it again"
        rm -f "$DB_PID"
    fi
    if port_busy "$DB_PORT"; then
        die_port_busy MariaDB "$DB_PORT" EXECTRACK_LOCAL_DB_PORT \
            "if that is the system MariaDB/MySQL service: 'service mariadb stop' (or systemctl stop mariadb)"
    fi

    mkdir -p "$DB_STATE"
    render_db_cnf "$DB_CNF"
    init_mariadb_datadir

    local -a args=(--defaults-file="$DB_CNF")
    # mariadbd refuses to run as root unless told to; as another user --user
    # would only print a warning.
    if ((EUID == 0)); then
        args+=(--user=root)
    fi
    printf '\n===== %s: starting %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MARIADBD" >>"$DB_OUT"
    say "starting MariaDB on $HOST:$DB_PORT"
    setsid nohup "$MARIADBD" "${args[@]}" </dev/null >>"$DB_OUT" 2>&1 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$DB_PID" # mariadbd rewrites it (same pid) once up
    wait_mariadb_ready "$pid"
    provision_mariadb
}

stop_mariadb() {
    local pid stale
    if ! pid=$(mariadb_running_pid); then
        stale=$(read_pid "$DB_PID")
        if [[ -n $stale ]]; then
            say "MariaDB not running (removing stale pid file of pid $stale)"
        else
            say "MariaDB not running"
        fi
        rm -f "$DB_PID"
        return 0
    fi
    say "stopping MariaDB (pid $pid)..."
    # Clean shutdown through the socket (waits for the server to exit)...
    if resolve_mariadb; then
        with_timeout "$STOP_TIMEOUT" "$MARIADB_ADMIN" --defaults-file="$DB_CNF" shutdown >/dev/null 2>&1 || true
    fi
    # ...then TERM (also a clean shutdown for mariadbd), then KILL.
    if is_ours "$pid" "--defaults-file=$DB_CNF"; then
        terminate MariaDB "$pid" "--defaults-file=$DB_CNF"
    fi
    rm -f "$DB_PID"
    say "MariaDB stopped"
}

# ----------------------------------------------------------------- commands --

kafka_url() { printf '%s:%s' "$HOST" "$KAFKA_PORT"; }
db_url() { printf 'mysql+aiomysql://%s:%s@%s:%s/%s' "$DB_USER" "$DB_PASSWORD" "$HOST" "$DB_PORT" "$DB_NAME"; }

SERVICES=()
parse_services() { # [kafka|mariadb] -> SERVICES
    case ${1:-all} in
        all | "") SERVICES=(kafka mariadb) ;;
        kafka) SERVICES=(kafka) ;;
        mariadb | db | mysql) SERVICES=(mariadb) ;;
        *) die "unknown service '$1' (kafka or mariadb)" ;;
    esac
}

cmd_up() {
    local s
    parse_services "${1:-}"
    lock_state
    for s in "${SERVICES[@]}"; do
        case $s in
            kafka) start_kafka ;;
            mariadb) start_mariadb ;;
        esac
    done
    echo
    echo "exectrack local stack (state: $LOCAL_DIR)"
    for s in "${SERVICES[@]}"; do
        case $s in
            kafka)
                printf '  kafka    %-22s pid %-8s log: %s\n' "$(kafka_url)" "$(read_pid "$KAFKA_PID")" "$KAFKA_LOG"
                ;;
            mariadb)
                printf '  mariadb  %-22s pid %-8s log: %s\n' "$HOST:$DB_PORT" "$(read_pid "$DB_PID")" "$DB_LOG"
                printf '           database/user/password %s/%s/%s; admin: %s --defaults-file=%s\n' \
                    "$DB_NAME" "$DB_USER" "$DB_PASSWORD" "$MARIADB_CLIENT" "$DB_CNF"
                ;;
        esac
    done
    echo "  app settings: eval \"\$($0 env)\""
}

cmd_down() {
    local s
    parse_services "${1:-}"
    if [[ ! -d $LOCAL_DIR ]]; then
        say "nothing to stop (no state in $LOCAL_DIR)"
        return 0
    fi
    lock_state
    for s in "${SERVICES[@]}"; do
        case $s in
            kafka) stop_kafka ;;
            mariadb) stop_mariadb ;;
        esac
    done
}

cmd_status() {
    local rc=0 pid
    if pid=$(kafka_running_pid); then
        if port_busy "$KAFKA_PORT"; then
            printf 'kafka    running   pid %-8s %s (controller %s:%s)\n' "$pid" "$(kafka_url)" "$HOST" "$KAFKA_CONTROLLER_PORT"
        else
            printf 'kafka    starting  pid %-8s %s (not listening yet)\n' "$pid" "$(kafka_url)"
            rc=3
        fi
    else
        printf 'kafka    stopped   %-12s %s\n' "" "$(kafka_url)"
        rc=3
    fi
    if pid=$(mariadb_running_pid); then
        if port_busy "$DB_PORT"; then
            printf 'mariadb  running   pid %-8s %s:%s (socket %s)\n' "$pid" "$HOST" "$DB_PORT" "$DB_SOCKET"
        else
            printf 'mariadb  starting  pid %-8s %s:%s (not listening yet)\n' "$pid" "$HOST" "$DB_PORT"
            rc=3
        fi
    else
        printf 'mariadb  stopped   %-12s %s:%s\n' "" "$HOST" "$DB_PORT"
        rc=3
    fi
    return "$rc"
}

cmd_env() {
    printf 'export EXECTRACK_KAFKA__BOOTSTRAP_SERVERS=%s\n' "$(kafka_url)"
    printf 'export EXECTRACK_DATABASE__URL=%s\n' "$(db_url)"
}

cmd_logs() {
    local s
    local -a files=()
    parse_services "${1:-}"
    for s in "${SERVICES[@]}"; do
        case $s in
            kafka) files+=("$KAFKA_LOG" "$KAFKA_OUT") ;;
            mariadb) files+=("$DB_LOG" "$DB_OUT") ;;
        esac
    done
    local -a existing=()
    for s in "${files[@]}"; do
        if [[ -f $s ]]; then
            existing+=("$s")
        fi
    done
    ((${#existing[@]} > 0)) || die "no logs yet under $LOCAL_DIR (run: $0 up)"
    tail -n 100 "${existing[@]}"
}

cmd_reset() {
    cmd_down
    say "deleting the local state (data and logs): $KAFKA_STATE $DB_STATE"
    rm -rf -- "$KAFKA_STATE" "$DB_STATE"
    [[ $DB_SOCKET == "$DB_STATE"/* ]] || rm -f -- "$DB_SOCKET"
    rm -f -- "$LOCAL_DIR/.stack.lock"
    rmdir -- "$LOCAL_DIR" 2>/dev/null || true
    say "done; the Kafka jar cache ($CACHE_DIR) is kept"
}

cmd_help() {
    cat <<EOF
Usage: $0 COMMAND [kafka|mariadb]

exectrack's local stack without Docker: a real Apache Kafka $KAFKA_VERSION broker
(single KRaft node, jars fetched once with Maven) and a private MariaDB
instance (Debian's mariadb-server, not the system service), on 127.0.0.1 only.

Commands:
  up [kafka|mariadb]    start what is not running (idempotent), wait until it
                        answers, create the exectrack database/user
  down [kafka|mariadb]  stop (graceful, then KILL after ${STOP_TIMEOUT}s)
  status                running/stopped, pid, address; exit 0 if both run, 3 if not
  env                   export lines for the app: eval "\$($0 env)"
  logs [kafka|mariadb]  last 100 lines of the logs
  reset                 down, then delete the local state (data, logs);
                        keeps the Kafka jar cache
  help                  this text

Settings (environment):
  EXECTRACK_LOCAL_DIR                    state dir        [$LOCAL_DIR]
  EXECTRACK_CACHE_DIR                    jar cache        [$CACHE_DIR]
  EXECTRACK_KAFKA_VERSION                Kafka version    [$KAFKA_VERSION]
  EXECTRACK_LOCAL_KAFKA_PORT             Kafka port       [$KAFKA_PORT]
  EXECTRACK_LOCAL_KAFKA_CONTROLLER_PORT  KRaft port       [$KAFKA_CONTROLLER_PORT]
  EXECTRACK_LOCAL_DB_PORT                MariaDB port     [$DB_PORT]
  EXECTRACK_LOCAL_KAFKA_HEAP             Kafka JVM heap   [$KAFKA_HEAP]
EOF
}

main() {
    check_port_setting EXECTRACK_LOCAL_KAFKA_PORT "$KAFKA_PORT"
    check_port_setting EXECTRACK_LOCAL_KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
    check_port_setting EXECTRACK_LOCAL_DB_PORT "$DB_PORT"
    [[ $KAFKA_VERSION =~ ^[0-9A-Za-z.+-]+$ ]] || die "EXECTRACK_KAFKA_VERSION=$KAFKA_VERSION is not a version"
    local cmd=${1:-help}
    if (($# > 0)); then
        shift
    fi
    case $cmd in
        up | start) cmd_up "$@" ;;
        down | stop) cmd_down "$@" ;;
        status) cmd_status ;;
        env) cmd_env ;;
        logs | log) cmd_logs "$@" ;;
        reset) cmd_reset ;;
        help | -h | --help) cmd_help ;;
        *)
            cmd_help >&2
            die "unknown command '$cmd'"
            ;;
    esac
}

main "$@"
