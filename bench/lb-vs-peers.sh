#!/usr/bin/env bash
# bench/lb-vs-peers.sh — herd's userspace TCP proxy against HAProxy and nginx `stream`.
#
# Starts three nginx HTTP backends, HAProxy (mode tcp, nbthread 1), nginx `stream` (one worker)
# and herd (one data-plane worker), each load balancer on its own loopback VIP, all round-robin
# to the same backends. Then runs `wrk` against each in interleaved rounds, keep-alive and
# `Connection: close`, and prints median req/s, median p99 latency, errors, the load balancer's
# own CPU cost per request, and the ratios to HAProxy. See bench/README.md for the choices.
#
# Traffic goes to 127.0.0.0/8 only. Every loop is bounded; every process and the temp dir the
# script starts are removed on exit, error, Ctrl-C or SIGTERM.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# --- addresses (all on loopback; any 127.0.0.0/8 address is bindable without configuration) ---
BACKENDS=(127.0.0.11:8081 127.0.0.12:8081 127.0.0.13:8081)
declare -A VIP=(
    [herd]=127.0.0.21:8080
    [haproxy]=127.0.0.22:8080
    [nginx]=127.0.0.23:8080
    [herd-b]=127.0.0.24:8080 # a second herd (another build or settings), for A/B runs
    [direct]=127.0.0.11:8081 # reference row: wrk straight at one backend, no load balancer
)
APT_LINE="apt-get update && apt-get install -y nginx-light libnginx-mod-stream haproxy wrk"
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so

# --- settings ---
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-1}
JSON_OUT=
INSTALL=0
# Run order within a round (rotated every round): herd next to HAProxy, so that the pair it is
# compared with runs close together in time.
LBS=${LBS:-haproxy,herd,nginx}
DIRECT=1
MODES=${MODES:-keepalive,close}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
# herd's lb.idle-poll (its default is 10us; "0" makes its workers sleep as soon as they are idle).
HERD_IDLE_POLL=${HERD_IDLE_POLL:-10us}
# CPU pinning (taskset -c LIST). Unset: the defaults chosen below (load balancer alone on CPU 1,
# wrk and backends on CPU 0); set to "" or use --no-pin to let the scheduler place it.
PIN=1
KEEP_TMP=0
# A run during which processes not started here took more than OTHER_LIMIT % of one CPU is
# measured again, at most RETRIES times.
OTHER_LIMIT=${OTHER_LIMIT:-20}
RETRIES=${RETRIES:-2}

usage() {
    cat <<EOF
Usage: bench/lb-vs-peers.sh [options]

Benchmarks herd's userspace TCP proxy against HAProxy (mode tcp, nbthread 1) and nginx
\`stream\` (worker_processes 1), each with one thread, in front of three nginx backends on
loopback. wrk (-t1) runs against each in interleaved rounds, keep-alive and
\`Connection: close\`; the script prints median req/s, median p99, errors, the LB's CPU time
per request and the ratios to HAProxy.

Options:
  --rounds N        rounds; each round measures every target once per mode (default $ROUNDS)
  --duration S      seconds per wrk run (default $DURATION)
  --conns N         wrk connections (default $CONNS)
  --quick           1 round of 3 s (a smoke run, not a measurement)
  --json FILE       also write the results as JSON to FILE
  --lbs LIST        load balancers to measure, comma-separated: haproxy, nginx, herd,
                    herd-b (default $LBS)
  --modes LIST      keepalive,close (default $MODES)
  --no-direct       skip the reference row (wrk straight at one backend)
  --no-pin          do not pin anything to CPUs (default: LB alone on CPU 1; wrk and the
                    backends on CPU 0; see README)
  --one-core        pin everything to CPU 0: no cross-CPU traffic, far steadier numbers on a
                    VM, compares CPU cost rather than one-core capacity (see README)
  --install         install missing peers with apt-get (needs root)
  --keep-tmp        keep the temp dir (configs, logs, raw wrk output) for inspection
  -h, --help        this help

Environment:
  HERD=PATH         use this herd binary instead of building it (cargo build --release -p herd)
  DURATION, ROUNDS, CONNS, WARMUP (s, default 1), BACKEND_WORKERS (default 1),
  HERD_IDLE_POLL=10us   herd's lb.idle-poll ("0": workers sleep as soon as they are idle)
  HERD_B=PATH, HERD_B_ENV="VAR=VALUE ..."   the target herd-b (--lbs haproxy,herd,herd-b): a
                    second herd on its own VIP, by default the same binary; HERD_B_ENV is
                    its environment. The summary adds herd-b/herd ratios (an A/B run)
  OTHER_LIMIT=20, RETRIES=2   a run during which other processes took more than OTHER_LIMIT %
                    of one CPU is measured again, at most RETRIES times
  CPU_LB, CPU_WRK, CPU_BACKENDS=LIST   taskset -c LIST for each part ("" = not pinned)
  CI=true           as root, missing peers are installed without --install

Needs: $APT_LINE
EOF
}

die() {
    echo "lb-vs-peers: error: $*" >&2
    exit 1
}
log() { echo "lb-vs-peers: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=${2:?--rounds needs N}; shift 2 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
    --conns) CONNS=${2:?--conns needs N}; shift 2 ;;
    --quick) ROUNDS=1; DURATION=3; shift ;;
    --json) JSON_OUT=${2:?--json needs FILE}; shift 2 ;;
    --lbs) LBS=${2:?--lbs needs a list}; shift 2 ;;
    --modes) MODES=${2:?--modes needs a list}; shift 2 ;;
    --no-direct) DIRECT=0; shift ;;
    --no-pin) PIN=0; shift ;;
    --one-core) PIN=one; shift ;;
    --install) INSTALL=1; shift ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "lb-vs-peers: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
is_uint "$ROUNDS" || die "--rounds must be a positive integer, not '$ROUNDS'"
is_uint "$DURATION" || die "--duration must be a positive integer number of seconds, not '$DURATION'"
is_uint "$CONNS" || die "--conns must be a positive integer, not '$CONNS'"
[ "$ROUNDS" -le 50 ] || die "--rounds is capped at 50"
[ "$DURATION" -le 600 ] || die "--duration is capped at 600 s"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
is_uint "$BACKEND_WORKERS" || die "BACKEND_WORKERS must be a positive integer"
[[ $OTHER_LIMIT =~ ^[0-9]+$ ]] || die "OTHER_LIMIT must be a whole number (% of one CPU)"
[[ $RETRIES =~ ^[0-9]+$ ]] && [ "$RETRIES" -le 5 ] || die "RETRIES must be 0..5"

IFS=, read -r -a LB_LIST <<<"$LBS"
for lb in "${LB_LIST[@]}"; do
    case "$lb" in haproxy | nginx | herd | herd-b) ;; *) die "unknown load balancer '$lb' in --lbs (haproxy, nginx, herd, herd-b)" ;; esac
done
[ "${#LB_LIST[@]}" -gt 0 ] || die "--lbs is empty"
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
    case "$m" in keepalive | close) ;; *) die "unknown mode '$m' in --modes (keepalive, close)" ;; esac
done
has_lb() {
    local x
    for x in "${LB_LIST[@]}"; do [ "$x" = "$1" ] && return 0; done
    return 1
}

# --- peers: check, and install only when asked (or as root under CI) ---
missing_peers() {
    local miss=()
    command -v nginx >/dev/null 2>&1 || miss+=(nginx-light)
    [ -f "$STREAM_MODULE" ] || miss+=(libnginx-mod-stream)
    command -v haproxy >/dev/null 2>&1 || miss+=(haproxy)
    command -v wrk >/dev/null 2>&1 || miss+=(wrk)
    echo "${miss[*]}"
}
MISSING=$(missing_peers)
if [ -n "$MISSING" ]; then
    if [ "$INSTALL" = 1 ] || { [ "$(id -u)" = 0 ] && [ "${CI:-}" = true ]; }; then
        [ "$(id -u)" = 0 ] || die "--install needs root; run as root: $APT_LINE"
        log "installing: $MISSING"
        # Their services are never started: the benchmark runs its own nginx and HAProxy on
        # its own addresses, and leaves any the machine runs alone (.ci/install).
        bash "$REPO_ROOT/.ci/install" nginx-light libnginx-mod-stream haproxy wrk
        MISSING=$(missing_peers)
        [ -z "$MISSING" ] || die "still missing after apt-get install: $MISSING"
    else
        die "missing: $MISSING
  install them with:  $APT_LINE
  (or rerun with --install as root)"
    fi
fi
for tool in awk sort timeout ss; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' (coreutils / gawk|mawk / iproute2)"
done
# The system under test gets a core of its own, so that req/s measures what one load-balancer
# thread can forward; wrk (one thread) and the backends share CPU 0. The "direct" row, wrk
# straight at a backend on that same core, shows the ceiling of the load side. See README.
NCPU=$(nproc)
if [ "$PIN" = one ]; then
    CPU_LB=0 CPU_WRK=0 CPU_BACKENDS=0
elif [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then
    CPU_LB=${CPU_LB-1}
    CPU_WRK=${CPU_WRK-0}
    if [ "$NCPU" -ge 3 ]; then CPU_BACKENDS=${CPU_BACKENDS-2-$((NCPU - 1))}; else CPU_BACKENDS=${CPU_BACKENDS-0}; fi
else
    [ "$PIN" = 1 ] && log "only one CPU: nothing is pinned"
    CPU_LB='' CPU_WRK='' CPU_BACKENDS=''
fi
if [ -n "$CPU_LB$CPU_WRK$CPU_BACKENDS" ]; then
    command -v taskset >/dev/null 2>&1 || die "CPU_* pinning needs taskset (util-linux)"
fi
PINNING="lb=${CPU_LB:-any} wrk=${CPU_WRK:-any} backends=${CPU_BACKENDS:-any}"

# --- temp dir and cleanup ---
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lb-vs-peers.XXXXXX")
declare -A PID=()   # name -> pid of a process this script started
CLEANED=0

# Children of a pid (nginx workers), so that they can be killed if the master does not stop.
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

stop_pid() { # name pid: SIGTERM, wait up to 5 s, then SIGKILL the process and its children.
    local name=$1 pid=$2 kids i
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(children_of "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 5 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    [ "$CLEANED" = 1 ] && return
    CLEANED=1
    trap - EXIT INT TERM
    set +e
    local name
    for name in "${!PID[@]}"; do stop_pid "$name" "${PID[$name]}"; done
    if [ "$KEEP_TMP" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Prints a log file's tail to stderr, for a failure message.
show_log() {
    local f=$1
    if [ -s "$f" ]; then
        echo "----- last lines of $f -----" >&2
        tail -n 30 "$f" >&2
        echo "-----" >&2
    fi
}

fail() { # message [log files...]
    local msg=$1 f
    shift
    echo "lb-vs-peers: error: $msg" >&2
    for f in "$@"; do show_log "$f"; done
    exit 1
}

# --- network helpers ---
# True if something accepts TCP connections on ip:port (bounded by a 1 s timeout).
accepts() {
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "${1%:*}" "${1##*:}" 2>/dev/null
}

# One HTTP/1.0 GET; prints the body's first line. Bounded to 2 s.
http_get() {
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET / HTTP/1.0\r\nHost: bench\r\n\r\n" >&3
        body=0
        while IFS= read -r -t 2 line <&3; do
            line=${line%$'"'"'\r'"'"'}
            if [ "$body" = 1 ]; then printf "%s\n" "$line"; exit 0; fi
            [ -z "$line" ] && body=1
        done
        exit 1' _ "${1%:*}" "${1##*:}" 2>/dev/null
}

port_free() { # addr:port — fail clearly if anything listens there or on the wildcard address.
    local ap=$1 port=${1##*:} ip=${1%:*} listeners
    listeners=$(ss -Htln "sport = :$port" 2>/dev/null | awk -v ip="$ip" '
        { split($4, a, ":"); addr = substr($4, 1, length($4) - length(a[length(a)]) - 1) }
        addr == ip || addr == "0.0.0.0" || addr == "*" || addr == "[::]" { print $4 }')
    if [ -n "$listeners" ] || accepts "$ap"; then
        echo "lb-vs-peers: error: $ap is already in use (listening: ${listeners:-something accepts there})" >&2
        ss -Htlnp "sport = :$port" >&2 2>/dev/null || true
        exit 1
    fi
}

wait_accepts() { # name addr:port logfile: poll for up to 10 s, fail if the process died.
    local name=$1 ap=$2 logf=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "${PID[$name]}" 2>/dev/null || fail "$name exited during start-up" "$logf"
        accepts "$ap" && return 0
        sleep 0.1
    done
    fail "$name does not accept on $ap after 10 s" "$logf"
}

# The LB must answer through each backend: three GETs give three different nodes (round-robin).
check_lb() { # name addr:port logfile
    local name=$1 ap=$2 logf=$3 i body seen=""
    for ((i = 0; i < 6; i++)); do
        body=$(http_get "$ap") || fail "$name: GET http://$ap/ failed" "$logf" "$TMP/backends.error.log"
        case "$body" in node0[1-3]) ;; *) fail "$name: unexpected answer '$body' from http://$ap/" "$logf" ;; esac
        case " $seen " in *" $body "*) ;; *) seen="$seen $body" ;; esac
    done
    [ "$(wc -w <<<"$seen")" = 3 ] || fail "$name: 6 requests reached only$seen, expected node01..node03 (round-robin)" "$logf"
}

# Runs a command in the background with optional CPU pinning; records the pid.
spawn() { # name cpu-list("" = any) logfile cmd...
    local name=$1 cpu=$2 logf=$3
    shift 3
    if [ -n "$cpu" ]; then
        taskset -c "$cpu" "$@" >"$logf" 2>&1 &
    else
        "$@" >"$logf" 2>&1 &
    fi
    PID[$name]=$!
}

# CPU ticks (utime+stime) of a process and its direct children (nginx master + workers).
cpu_ticks() {
    local pid=$1 p total=0 t
    for p in "$pid" $(children_of "$pid"); do
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# Machine-wide "busy idle" jiffies from /proc/stat: to tell a CPU-bound run from one that waits,
# and (with the processes' own ticks, which include the softirq work done in their context) how
# much CPU something else on the box took.
box_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, $5 + $6; exit }' /proc/stat; }

# CPU ticks of this shell's waited-for children (wrk, via timeout), from the `times` builtin,
# into CHILD_TICKS. Not called as $(...): a subshell's children start from zero.
child_ticks() {
    times >"$TMP/times"
    CHILD_TICKS=$(awk -v tck="$CLK_TCK" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%d\n", t * tck }' "$TMP/times")
}

# --- herd binary ---
HERD_BIN=
if has_lb herd || has_lb herd-b; then
    if [ -n "${HERD:-}" ]; then
        HERD_BIN=$HERD
        [ -x "$HERD_BIN" ] || die "HERD=$HERD_BIN is not an executable file"
    else
        command -v cargo >/dev/null 2>&1 || die "cargo not found; build herd elsewhere and pass HERD=/path/to/herd"
        log "building herd: cargo build --release -p herd (in $REPO_ROOT)"
        if ! (cd "$REPO_ROOT" && cargo build --release -p herd) >"$TMP/cargo-build.log" 2>&1; then
            grep -E '^error' -A6 "$TMP/cargo-build.log" >&2 || true
            fail "cargo build --release -p herd failed (pass HERD=/path/to/herd to use another build, or --lbs haproxy,nginx to skip herd)" "$TMP/cargo-build.log"
        fi
        HERD_BIN=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/herd
        [ -x "$HERD_BIN" ] || HERD_BIN=$REPO_ROOT/target/release/herd
        [ -x "$HERD_BIN" ] || die "built herd but cannot find target/release/herd"
    fi
fi
HERD_B_BIN=${HERD_B:-$HERD_BIN}
if has_lb herd-b; then
    [ -x "$HERD_B_BIN" ] || die "HERD_B=$HERD_B_BIN is not an executable file"
    for kv in ${HERD_B_ENV:-}; do
        [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "HERD_B_ENV: '$kv' is not VAR=VALUE"
    done
fi

# --- ports ---
for ap in "${BACKENDS[@]}"; do port_free "$ap"; done
for lb in "${LB_LIST[@]}"; do port_free "${VIP[$lb]}"; done

# HAProxy needs 2 fds per proxied connection plus some; keep maxconn within the fd limit.
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=65536
MAXCONN=$(((NOFILE - 200) / 2))
[ "$MAXCONN" -gt 10000 ] && MAXCONN=10000
[ "$MAXCONN" -ge $((CONNS * 2)) ] || die "fd limit $NOFILE is too low for --conns $CONNS (raise ulimit -n)"

# --- backends: one nginx, three server blocks ---
# Every listener gets a backlog of 4096 (HAProxy's and herd's too, given somaxconn 4096), so
# that a burst of connects (the warm-up opens --conns at once) is not dropped by nginx's 511.
# One nginx with $BACKEND_WORKERS worker(s) serving all three addresses: three separate nginx
# processes would be three more runnable processes fighting for the same two cores (see README).
{
    echo "worker_processes $BACKEND_WORKERS;"
    echo "pid $TMP/backends.pid;"
    echo "error_log $TMP/backends.error.log warn;"
    echo "daemon off;"
    echo "worker_rlimit_nofile $NOFILE;"
    echo "events { worker_connections 4096; multi_accept on; }"
    echo "http {"
    echo "    access_log off;"
    echo "    default_type text/plain;"
    # Keep-alive connections must not be cut every 1000 requests (nginx's default), or the LB
    # in front sees closes that the client did not ask for.
    echo "    keepalive_requests 10000000;"
    echo "    keepalive_timeout 75s;"
    echo "    client_body_temp_path $TMP/ngx-tmp; proxy_temp_path $TMP/ngx-tmp;"
    echo "    fastcgi_temp_path $TMP/ngx-tmp; uwsgi_temp_path $TMP/ngx-tmp; scgi_temp_path $TMP/ngx-tmp;"
    i=1
    for ap in "${BACKENDS[@]}"; do
        printf '    server { listen %s backlog=4096; location / { return 200 "node0%d\\n"; } }\n' "$ap" "$i"
        i=$((i + 1))
    done
    echo "}"
} >"$TMP/backends.conf"
mkdir -p "$TMP/ngx-tmp"

# --- load balancers ---
BE1=${BACKENDS[0]} BE2=${BACKENDS[1]} BE3=${BACKENDS[2]}
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
    pidfile $TMP/haproxy.pid
defaults
    mode tcp
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend fe
    bind ${VIP[haproxy]}
    default_backend be
backend be
    balance roundrobin
    server node01 $BE1
    server node02 $BE2
    server node03 $BE3
EOF

cat >"$TMP/nginx-stream.conf" <<EOF
load_module $STREAM_MODULE;
worker_processes 1;
pid $TMP/nginx-stream.pid;
error_log $TMP/nginx-stream.error.log warn;
daemon off;
worker_rlimit_nofile $NOFILE;
events { worker_connections 4096; multi_accept on; }
stream {
    upstream be {
        server $BE1;
        server $BE2;
        server $BE3;
    }
    server {
        listen ${VIP[nginx]} backlog=4096;
        proxy_pass be;
        proxy_connect_timeout 3s;
    }
}
EOF

herd_config() { # vip
    cat <<EOF
[daemon]
drain-timeout = "1s"
log-level = "warn"
[lb]
workers = 1
idle-poll = "$HERD_IDLE_POLL"
[[lb.service]]
address = "$1"
scheduler = "rr"
  [[lb.service.real]]
  address = "$BE1"
  weight = 1
  [[lb.service.real]]
  address = "$BE2"
  weight = 1
  [[lb.service.real]]
  address = "$BE3"
  weight = 1
EOF
}
herd_config "${VIP[herd]}" >"$TMP/herd.toml"
herd_config "${VIP[herd-b]}" >"$TMP/herd-b.toml"

# --- versions ---
# The first line of a command's output. No `| head`: head exiting early would SIGPIPE the
# command, and with pipefail that fails the script.
first_line() {
    local out
    out=$("$@" 2>&1) || true
    printf '%s\n' "${out%%$'\n'*}"
}
V_HAPROXY=$(first_line haproxy -v)
V_NGINX=$(first_line nginx -v)
V_WRK=$(first_line wrk -v)
V_WRK=${V_WRK% Copyright*}
V_HERD=-
[ -n "$HERD_BIN" ] && V_HERD=$(first_line "$HERD_BIN" --version)
V_KERNEL=$(uname -sr)
echo "versions:"
echo "  $V_HAPROXY"
echo "  $V_NGINX"
echo "  $V_WRK"
echo "  herd: $V_HERD${HERD_BIN:+ ($HERD_BIN)}"
has_lb herd-b && echo "  herd-b: $(first_line "$HERD_B_BIN" --version) ($HERD_B_BIN)${HERD_B_ENV:+, environment: $HERD_B_ENV}"
echo "  kernel: $V_KERNEL, $NCPU CPUs"
echo "settings: rounds=$ROUNDS duration=${DURATION}s conns=$CONNS wrk -t1, backend nginx workers=$BACKEND_WORKERS, herd idle-poll=$HERD_IDLE_POLL, cpus: $PINNING"

# --- start everything ---
nginx -t -q -e "$TMP/backends.early.log" -c "$TMP/backends.conf" -p "$TMP" 2>"$TMP/backends.test.log" ||
    fail "backend nginx config is invalid" "$TMP/backends.test.log"
spawn backends "$CPU_BACKENDS" "$TMP/backends.log" nginx -e "$TMP/backends.early.log" -c "$TMP/backends.conf" -p "$TMP"
for ap in "${BACKENDS[@]}"; do wait_accepts backends "$ap" "$TMP/backends.error.log"; done
for ap in "${BACKENDS[@]}"; do
    body=$(http_get "$ap") || fail "backend $ap does not answer GET /" "$TMP/backends.error.log"
    case "$body" in node0[1-3]) ;; *) fail "backend $ap answered '$body'" "$TMP/backends.error.log" ;; esac
done

if has_lb haproxy; then
    haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy.check.log" 2>&1 ||
        fail "HAProxy config is invalid" "$TMP/haproxy.check.log"
    # -db: stay in the foreground, so the script owns the pid and sees the logs.
    spawn haproxy "$CPU_LB" "$TMP/haproxy.log" haproxy -db -f "$TMP/haproxy.cfg"
    wait_accepts haproxy "${VIP[haproxy]}" "$TMP/haproxy.log"
    check_lb haproxy "${VIP[haproxy]}" "$TMP/haproxy.log"
fi
if has_lb nginx; then
    nginx -t -q -e "$TMP/nginx-stream.early.log" -c "$TMP/nginx-stream.conf" -p "$TMP" 2>"$TMP/nginx-stream.test.log" ||
        fail "nginx stream config is invalid" "$TMP/nginx-stream.test.log"
    spawn nginx "$CPU_LB" "$TMP/nginx-stream.log" nginx -e "$TMP/nginx-stream.early.log" -c "$TMP/nginx-stream.conf" -p "$TMP"
    wait_accepts nginx "${VIP[nginx]}" "$TMP/nginx-stream.error.log"
    check_lb nginx "${VIP[nginx]}" "$TMP/nginx-stream.error.log"
fi
if has_lb herd; then
    "$HERD_BIN" config validate "$TMP/herd.toml" >"$TMP/herd.validate.log" 2>&1 ||
        fail "herd rejects the config" "$TMP/herd.validate.log"
    spawn herd "$CPU_LB" "$TMP/herd.log" "$HERD_BIN" daemon --config "$TMP/herd.toml" --socket "$TMP/herd.sock"
    wait_accepts herd "${VIP[herd]}" "$TMP/herd.log"
    check_lb herd "${VIP[herd]}" "$TMP/herd.log"
fi
if has_lb herd-b; then
    "$HERD_B_BIN" config validate "$TMP/herd-b.toml" >"$TMP/herd-b.validate.log" 2>&1 ||
        fail "herd-b rejects the config" "$TMP/herd-b.validate.log"
    # shellcheck disable=SC2086 # HERD_B_ENV is a list of VAR=VALUE words
    spawn herd-b "$CPU_LB" "$TMP/herd-b.log" env ${HERD_B_ENV:-} "$HERD_B_BIN" daemon --config "$TMP/herd-b.toml" --socket "$TMP/herd-b.sock"
    wait_accepts herd-b "${VIP[herd-b]}" "$TMP/herd-b.log"
    check_lb herd-b "${VIP[herd-b]}" "$TMP/herd-b.log"
fi

TARGETS=()
[ "$DIRECT" = 1 ] && TARGETS+=(direct)
TARGETS+=("${LB_LIST[@]}")

# --- wrk ---
# Converts wrk's latency ("812.00us", "1.23ms", "2.00s", "1.00m") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u != "ms") { print "nan"; exit }
        printf "%.3f\n", n }'
}

# Parses a wrk --latency output file into: rps p99_ms socket_errors non2xx requests
parse_wrk() {
    local f=$1 rps p99 serr non2xx reqs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    p99=$(awk '$1 == "99%" { print $2 }' "$f")
    serr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
    reqs=$(awk '/ requests in / { print $1 }' "$f")
    [ -n "$rps" ] && [ -n "$p99" ] && [ -n "$reqs" ] || return 1
    echo "$rps $(to_ms "$p99") ${serr:-0} ${non2xx:-0} $reqs"
}

run_wrk() { # target mode seconds outfile
    local target=$1 mode=$2 secs=$3 out=$4 hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    local cmd=(wrk -t1 "-c$CONNS" "-d${secs}s" --timeout 2s --latency "${hdr[@]}" "http://${VIP[$target]}/")
    [ -n "$CPU_WRK" ] && cmd=(taskset -c "$CPU_WRK" "${cmd[@]}")
    # wrk stops by itself after -d; the timeout is a guard against a hang. It runs in the
    # background and the script `wait`s for it, because `wait` returns at once on a trapped
    # signal (Ctrl-C), where a foreground command would delay the trap or swallow it.
    timeout -k 5 $((secs + 30)) "${cmd[@]}" >"$out" 2>&1 &
    PID[wrk]=$!
    local rc=0
    wait "${PID[wrk]}" || rc=$?
    unset 'PID[wrk]'
    return "$rc"
}

owner_pid() { # target -> pid whose CPU counts as the load balancer's ("-" for direct)
    case "$1" in direct) echo - ;; *) echo "${PID[$1]}" ;; esac
}

alive_or_fail() { # target [more log files to show]
    local t=$1
    shift
    [ "$t" = direct ] && t=backends
    local logf rc
    case "$t" in
    backends) logf=$TMP/backends.error.log ;; haproxy) logf=$TMP/haproxy.log ;;
    nginx) logf=$TMP/nginx-stream.error.log ;; herd | herd-b) logf=$TMP/$t.log ;;
    esac
    kill -0 "${PID[$t]}" 2>/dev/null || {
        wait "${PID[$t]}" 2>/dev/null && rc=0 || rc=$?
        fail "$t (pid ${PID[$t]}) died during the benchmark (exit status $rc)" "$logf" "$@"
    }
}

if [ "$WARMUP" -gt 0 ]; then
    log "warm-up: ${WARMUP}s keep-alive against each target"
    for t in "${TARGETS[@]}"; do
        run_wrk "$t" keepalive "$WARMUP" "$TMP/warmup-$t.txt" ||
            fail "wrk warm-up against $t failed" "$TMP/warmup-$t.txt"
        alive_or_fail "$t"
    done
fi

# One wrk run against a target, with CPU accounting. Sets M_PARSED (see parse_wrk), M_LB_TICKS
# (the LB's CPU ticks), M_BUSY (% of all CPUs busy) and M_OTHER (% of one CPU that processes
# not started by this script took).
measure() { # target mode outfile
    local t=$1 mode=$2 out=$3 pid c0=0 c1=0 w0 w1 s0 s1 b0 i0 b1 i1
    pid=$(owner_pid "$t")
    [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
    child_ticks
    w0=$CHILD_TICKS
    s0=$(cpu_ticks "${PID[backends]}")
    read -r b0 i0 <<<"$(box_ticks)"
    if ! run_wrk "$t" "$mode" "$DURATION" "$out"; then
        alive_or_fail "$t" "$out"
        fail "wrk against $t ($mode) failed" "$out"
    fi
    read -r b1 i1 <<<"$(box_ticks)"
    [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
    s1=$(cpu_ticks "${PID[backends]}")
    child_ticks
    w1=$CHILD_TICKS
    alive_or_fail "$t" "$out"
    M_LB_TICKS=$((c1 - c0))
    M_BUSY=$(awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f", (b + i) ? 100 * b / (b + i) : 0 }')
    # Busy time not spent by our processes: a compile or a test suite running beside the
    # benchmark shows here. The processes' own ticks include the softirq work done in their
    # context, so they are compared with all busy time, softirq included.
    M_OTHER=$(awk -v u=$((b1 - b0)) -v ours=$((c1 - c0 + s1 - s0 + w1 - w0)) -v tck="$CLK_TCK" -v d="$DURATION" \
        'BEGIN { o = (u - ours) / tck / d * 100; printf "%.0f", o < 0 ? 0 : o }')
    M_PARSED=$(parse_wrk "$out") || fail "cannot parse wrk output for $t ($mode)" "$out"
}

RESULTS=$TMP/results.tsv # mode target round rps p99_ms socket_errors non2xx requests lb_cpu_ticks box_busy_pct other_cpu_pct
: >"$RESULTS"
NT=${#TARGETS[@]}
total_runs=$((ROUNDS * ${#MODE_LIST[@]} * NT))
run=0
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in "${MODE_LIST[@]}"; do
        # Rotate the order each round, so that slow drift of a noisy machine hits all targets.
        for ((k = 0; k < NT; k++)); do
            t=${TARGETS[$(((k + r - 1) % NT))]}
            run=$((run + 1))
            # A run during which other processes took much CPU is measured again, at most
            # RETRIES times; the last attempt counts either way.
            for ((attempt = 0; attempt <= RETRIES; attempt++)); do
                measure "$t" "$mode" "$TMP/wrk-r$r-$mode-$t.txt"
                [ "$M_OTHER" -le "$OTHER_LIMIT" ] && break
                if [ "$attempt" -lt "$RETRIES" ]; then
                    log "warning: other processes took ${M_OTHER}% of a CPU during this run; measuring it again"
                    sleep 2
                else
                    log "warning: other processes took ${M_OTHER}% of a CPU during this run; its numbers are suspect"
                fi
            done
            read -r rps p99 serr non2xx reqs <<<"$M_PARSED"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$t" "$r" "$rps" "$p99" "$serr" "$non2xx" "$reqs" "$M_LB_TICKS" "$M_BUSY" "$M_OTHER" >>"$RESULTS"
            printf '  [%2d/%d] round %d %-9s %-8s %10s req/s  p99 %8s ms  errors %s/%s  cpu: LB %s%%, box %s%%, others %s%%\n' \
                "$run" "$total_runs" "$r" "$mode" "$t" "$rps" "$p99" "$serr" "$non2xx" \
                "$([ "$t" = direct ] && echo - || echo $((M_LB_TICKS * 100 / CLK_TCK / DURATION)))" "$M_BUSY" "$M_OTHER" >&2
            if [ "$serr" != 0 ] || [ "$non2xx" != 0 ]; then
                log "$t ($mode) had errors; wrk said:"
                sed 's/^/    /' "$TMP/wrk-r$r-$mode-$t.txt" >&2
            fi
        done
    done
done

# --- summary ---
# Per mode and target: medians of req/s and p99 over rounds, summed errors, LB CPU per request.
SUMMARY=$TMP/summary.tsv # mode target rps_med p99_med socket_errors non2xx cpu_us_per_req cpu_pct box_busy_med rps_spread_pct other_cpu_max rps_best
awk -F'\t' -v tck="$CLK_TCK" -v dur="$DURATION" '
    function median(s,   a, n, i, j, t) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        k = $1 SUBSEP $2
        if (!(k in rps)) order[++no] = k
        rps[k] = rps[k] " " $4; if (!(k in lo) || $4 + 0 < lo[k]) lo[k] = $4 + 0; if (!(k in hi) || $4 + 0 > hi[k]) hi[k] = $4 + 0; p99[k] = p99[k] " " $5; busy[k] = busy[k] " " $10; if ($11 + 0 > oth[k]) oth[k] = $11 + 0
        serr[k] += $6; n2[k] += $7; reqs[k] += $8; ticks[k] += $9; runs[k]++
    }
    END {
        for (i = 1; i <= no; i++) {
            k = order[i]; split(k, mt, SUBSEP)
            cpu = (mt[2] == "direct" || reqs[k] == 0) ? "-" : sprintf("%.2f", ticks[k] / tck * 1e6 / reqs[k])
            pct = (mt[2] == "direct") ? "-" : sprintf("%.0f", ticks[k] / tck / (dur * runs[k]) * 100)
            m = median(rps[k])
            printf "%s\t%s\t%.2f\t%.3f\t%d\t%d\t%s\t%s\t%.0f\t%.0f\t%d\t%.2f\n", mt[1], mt[2], m, median(p99[k]), serr[k], n2[k], cpu, pct, median(busy[k]), (m > 0 ? 100 * (hi[k] - lo[k]) / m : 0), oth[k], hi[k]
        }
    }' "$RESULTS" >"$SUMMARY"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
field() { awk -F'\t' -v m="$1" -v t="$2" -v c="$3" '$1 == m && $2 == t { print $c }' "$SUMMARY"; }
# Median over rounds of the per-round ratio a/b of RESULTS column c (4 req/s, 5 p99). Runs of the
# same round are close in time, so this ratio is less hurt by slow phases of a shared machine
# than the ratio of the medians.
paired_ratio() { # mode a b column
    awk -F'\t' -v m="$1" -v a="$2" -v b="$3" -v c="$4" '
        $1 == m && $2 == a { x[$3] = $c } $1 == m && $2 == b { y[$3] = $c }
        END {
            n = 0
            for (r in x) if ((r in y) && y[r] + 0 > 0) v[++n] = x[r] / y[r]
            if (n == 0) { print "-"; exit }
            for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            printf "%.2f\n", (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }' "$RESULTS"
}
# How the per-round ratios a/b of RESULTS column c spread: their middle half (25th to 75th
# percentile) and in how many rounds a did better than b ("higher" or "lower" is better). Two
# identical builds (herd against herd-b, an A/A run) show how wide this is from noise alone.
paired_spread() { # mode a b column higher|lower
    awk -F'\t' -v m="$1" -v a="$2" -v b="$3" -v c="$4" -v better="$5" '
        function q(p,   i) { i = int(p * (n - 1) + 0.5) + 1; return v[i] }
        $1 == m && $2 == a { x[$3] = $c } $1 == m && $2 == b { y[$3] = $c }
        END {
            n = 0; k = 0
            for (r in x) if ((r in y) && y[r] + 0 > 0) {
                v[++n] = x[r] / y[r]
                if ((better == "higher" && x[r] + 0 > y[r] + 0) || (better == "lower" && x[r] + 0 < y[r] + 0)) k++
            }
            if (n == 0) { print "-"; exit }
            for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            printf "middle half x%.2f-x%.2f, %s in %d of %d rounds\n", q(0.25), q(0.75), better, k, n
        }' "$RESULTS"
}

ROW='%-8s %10s %10s %6s %7s %7s %6s %9s %6s %7s %6s %10s %8s\n'
echo
for mode in "${MODE_LIST[@]}"; do
    case "$mode" in keepalive) title="keep-alive" ;; close) title="Connection: close" ;; esac
    echo "== $title: wrk -t1 -c$CONNS -d${DURATION}s, median of $ROUNDS round(s) =="
    # shellcheck disable=SC2059 # the format is ours
    printf "$ROW" target "req/s" "best req/s" spread "p99 ms" sockerr non2xx "LB us/req" "LB cpu" "box cpu" others "req/s /HAP" "p99 /HAP"
    ha_rps=$(field "$mode" haproxy 3)
    ha_p99=$(field "$mode" haproxy 4)
    for t in "${TARGETS[@]}"; do
        rps=$(field "$mode" "$t" 3)
        p99=$(field "$mode" "$t" 4)
        rr=- rp=-
        if [ -n "$ha_rps" ] && [ "$t" != direct ]; then
            rr=$(ratio "$rps" "$ha_rps")
            rp=$(ratio "$p99" "$ha_p99")
        fi
        pct=$(field "$mode" "$t" 8)
        [ "$pct" != - ] && pct="$pct%"
        # shellcheck disable=SC2059
        printf "$ROW" "$t" "$rps" "$(field "$mode" "$t" 12)" "$(field "$mode" "$t" 10)%" "$p99" "$(field "$mode" "$t" 5)" "$(field "$mode" "$t" 6)" \
            "$(field "$mode" "$t" 7)" "$pct" "$(field "$mode" "$t" 9)%" "$(field "$mode" "$t" 11)%" "$rr" "$rp"
    done
    if has_lb herd && has_lb haproxy; then
        echo "herd/HAProxy req/s: x$(ratio "$(field "$mode" herd 3)" "$ha_rps") (medians), x$(paired_ratio "$mode" herd haproxy 4) (median of per-round ratios), x$(ratio "$(field "$mode" herd 12)" "$(field "$mode" haproxy 12)") (best runs); higher is better for herd"
        echo "                    per round: $(paired_spread "$mode" herd haproxy 4 higher)"
        echo "herd/HAProxy p99:   x$(ratio "$(field "$mode" herd 4)" "$ha_p99") (medians), x$(paired_ratio "$mode" herd haproxy 5) (median of per-round ratios); lower is better for herd"
        echo "                    per round: $(paired_spread "$mode" herd haproxy 5 lower)"
    fi
    if has_lb herd && has_lb herd-b; then
        echo "herd-b/herd req/s:  x$(ratio "$(field "$mode" herd-b 3)" "$(field "$mode" herd 3)") (medians), x$(paired_ratio "$mode" herd-b herd 4) (median of per-round ratios); $(paired_spread "$mode" herd-b herd 4 higher)"
        echo "herd-b/herd p99:    x$(ratio "$(field "$mode" herd-b 4)" "$(field "$mode" herd 4)") (medians), x$(paired_ratio "$mode" herd-b herd 5) (median of per-round ratios); $(paired_spread "$mode" herd-b herd 5 lower)"
    fi
    echo
done
echo "best req/s: the fastest round (noise on a VM only ever slows a run down). spread: (max-min)/median"
echo "of req/s. LB us/req: the LB process's user+system CPU per request. box cpu: busy share of all"
echo "CPUs. others: most CPU (% of one CPU) that processes not started here took during one run."

# --- JSON ---
json_str() { # escapes a string for JSON
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    printf '"%s"' "$s"
}
if [ -n "$JSON_OUT" ]; then
    {
        echo "{"
        echo "  \"benchmark\": \"lb-vs-peers\","
        echo "  \"date\": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)"),"
        echo "  \"versions\": {\"haproxy\": $(json_str "$V_HAPROXY"), \"nginx\": $(json_str "$V_NGINX"), \"wrk\": $(json_str "$V_WRK"), \"herd\": $(json_str "$V_HERD"), \"kernel\": $(json_str "$V_KERNEL")},"
        echo "  \"settings\": {\"rounds\": $ROUNDS, \"duration_s\": $DURATION, \"connections\": $CONNS, \"wrk_threads\": 1, \"lb_threads\": 1, \"backend_workers\": $BACKEND_WORKERS, \"herd_idle_poll\": $(json_str "$HERD_IDLE_POLL"), \"pinning\": $(json_str "$PINNING"), \"cpus\": $NCPU},"
        echo "  \"summary\": ["
        awk -F'\t' '{
            printf "%s    {\"mode\": \"%s\", \"target\": \"%s\", \"rps_median\": %s, \"p99_ms_median\": %s, \"socket_errors\": %s, \"non2xx\": %s, \"lb_cpu_us_per_req\": %s, \"lb_cpu_pct\": %s, \"box_cpu_pct\": %s, \"rps_spread_pct\": %s, \"other_cpu_pct_max\": %s, \"rps_best\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5, $6, ($7 == "-" ? "null" : $7), ($8 == "-" ? "null" : $8), $9, $10, $11, $12
        } END { print "" }' "$SUMMARY"
        echo "  ],"
        echo "  \"ratios_herd_over_haproxy\": {"
        first=1
        for mode in "${MODE_LIST[@]}"; do
            if has_lb herd && has_lb haproxy; then
                [ "$first" = 1 ] || echo ","
                first=0
                rr=$(ratio "$(field "$mode" herd 3)" "$(field "$mode" haproxy 3)")
                rp=$(ratio "$(field "$mode" herd 4)" "$(field "$mode" haproxy 4)")
                pr=$(paired_ratio "$mode" herd haproxy 4)
                pp=$(paired_ratio "$mode" herd haproxy 5)
                pb=$(ratio "$(field "$mode" herd 12)" "$(field "$mode" haproxy 12)")
                printf '    "%s": {"rps": %s, "p99": %s, "rps_paired": %s, "p99_paired": %s, "rps_best": %s}' "$mode" "${rr/-/null}" "${rp/-/null}" "${pr/-/null}" "${pp/-/null}" "${pb/-/null}"
            fi
        done
        echo
        echo "  },"
        if has_lb herd && has_lb herd-b; then
            echo "  \"ratios_herd_b_over_herd\": {"
            first=1
            for mode in "${MODE_LIST[@]}"; do
                [ "$first" = 1 ] || echo ","
                first=0
                rr=$(ratio "$(field "$mode" herd-b 3)" "$(field "$mode" herd 3)")
                rp=$(ratio "$(field "$mode" herd-b 4)" "$(field "$mode" herd 4)")
                pr=$(paired_ratio "$mode" herd-b herd 4)
                pp=$(paired_ratio "$mode" herd-b herd 5)
                printf '    "%s": {"rps": %s, "p99": %s, "rps_paired": %s, "p99_paired": %s}' "$mode" "${rr/-/null}" "${rp/-/null}" "${pr/-/null}" "${pp/-/null}"
            done
            echo
            echo "  },"
        fi
        echo "  \"runs\": ["
        awk -F'\t' -v tck="$CLK_TCK" '{
            printf "%s    {\"mode\": \"%s\", \"target\": \"%s\", \"round\": %s, \"rps\": %s, \"p99_ms\": %s, \"socket_errors\": %s, \"non2xx\": %s, \"requests\": %s, \"lb_cpu_s\": %s, \"box_cpu_pct\": %s, \"other_cpu_pct\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5, $6, $7, $8, ($2 == "direct" ? "null" : sprintf("%.2f", $9 / tck)), $10, $11
        } END { print "" }' "$RESULTS"
        echo "  ]"
        echo "}"
    } >"$JSON_OUT.tmp.$$"
    mv "$JSON_OUT.tmp.$$" "$JSON_OUT"
    log "wrote $JSON_OUT"
fi
