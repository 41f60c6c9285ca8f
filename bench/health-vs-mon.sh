#!/usr/bin/env bash
# health-vs-mon.sh — the health monitor's cost: N HTTP real servers on 127.0.0.0/8 checked
# every second by herd, then by mon (http.monitor) in the same run.
#
# One nginx listens on N loopback addresses (127.0.1.1 ...) and logs every request, so both
# checkers are measured the same way: CPU from a cgroup (the checker and every process it
# starts), checks per second from nginx's access log.
set -euo pipefail

N=${N:-1000}
DURATION=${DURATION:-30}
usage() {
  cat <<EOF
usage: bench/health-vs-mon.sh [--targets N] [--duration S] [--no-mon]

Checks N HTTP servers every second, with herd and then with mon, and prints for each the
checks per second actually done and the CPU used (all its processes), as % of one core.

  --targets N     HTTP servers to check (default $N; at most 62500)
  --duration S    seconds measured per checker (default $DURATION)
  --no-mon        herd only

Needs root (cgroup v1 cpuacct or cgroup v2 for the CPU accounting), nginx, mon.
EOF
}
MON=1
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) N=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --no-mon) MON=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 64 ;;
  esac
done
die() { echo "health-vs-mon: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (cgroups)"
command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx-light)"
[ "$MON" = 0 ] || [ -x /usr/sbin/mon ] || die "mon is missing (apt-get install mon), or use --no-mon"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/herd-health-bench.XXXXXX)
PIDS=()
CGS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for cg in "${CGS[@]}"; do
    if [ -f "$cg/tasks" ]; then xargs -r kill -9 < "$cg/tasks" 2>/dev/null || true; fi
    if [ -f "$cg/cgroup.procs" ]; then xargs -r kill -9 < "$cg/cgroup.procs" 2>/dev/null || true; fi
    sleep 0.2; rmdir "$cg" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A cgroup that counts CPU: v1 cpuacct or v2.
new_cgroup() {
  local cg
  if [ -d /sys/fs/cgroup/cpuacct ]; then
    cg=/sys/fs/cgroup/cpuacct/herd-bench-$1-$$
  else
    cg=/sys/fs/cgroup/herd-bench-$1-$$
  fi
  mkdir "$cg"
  CGS+=("$cg")
  echo "$cg"
}
cpu_ns() {
  if [ -f "$1/cpuacct.usage" ]; then cat "$1/cpuacct.usage"
  else awk '$1=="usage_usec"{print $2*1000}' "$1/cpu.stat"; fi
}

ips=()
for ((i = 0; i < N; i++)); do ips+=("127.0.$((1 + i / 250)).$((1 + i % 250))"); done

{
  echo "worker_processes 1; pid $TMP/nginx.pid; error_log $TMP/nginx.err warn; daemon off;"
  echo "events { worker_connections 16384; }"
  echo "http { log_format t '\$msec'; access_log $TMP/access.log t buffer=64k flush=1s;"
  echo " client_body_temp_path $TMP; proxy_temp_path $TMP; fastcgi_temp_path $TMP; uwsgi_temp_path $TMP; scgi_temp_path $TMP;"
  echo " server {"
  for ip in "${ips[@]}"; do echo "  listen $ip:8081 backlog=1024;"; done
  echo '  location / { return 200 "ok\n"; } } }'
} > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -p "$TMP" 2>"$TMP/nginx.out" &
PIDS+=($!)
sleep 1

echo "health-vs-mon: building herd (cargo build --release -p herd)" >&2
(cd "$ROOT" && cargo build --release -q -p herd)
HERD=$ROOT/target/release/herd

{
  printf '[daemon]\nlog-level = "warn"\n[lb]\nworkers = 1\n[[lb.service]]\nname = "web"\naddress = "127.0.0.99:8080"\nscheduler = "rr"\n'
  for ip in "${ips[@]}"; do printf '[[lb.service.real]]\naddress = "%s:8081"\n' "$ip"; done
  printf '[[health.check]]\nname = "http"\ntype = "http"\nservice = "web"\ninterval = "1s"\ntimeout = "900ms"\n'
} > "$TMP/herd.toml"

{
  printf 'cfbasedir = %s\nstatedir = %s\nlogdir = %s\nmondir = /usr/lib/mon/mon.d\nalertdir = /usr/lib/mon/alert.d\nmaxprocs = 20\ndtlogging = no\n\n' "$TMP" "$TMP" "$TMP"
  printf 'hostgroup web %s\n\n' "${ips[*]}"
  printf 'watch web\n    service http\n        interval 1s\n        monitor http.monitor -p 8081 -t 1\n        period wd {Sun-Sat}\n            alert file.alert -d %s alerts.log\n' "$TMP"
} > "$TMP/mon.cf"
cp /etc/mon/auth.cf "$TMP/auth.cf" 2>/dev/null || touch "$TMP/auth.cf"

# measure NAME CMD...: starts CMD in its own cgroup, lets it settle, measures DURATION seconds.
measure() {
  local name=$1; shift
  local cg; cg=$(new_cgroup "$name")
  ( if [ -f "$cg/tasks" ]; then echo $BASHPID > "$cg/tasks"; else echo $BASHPID > "$cg/cgroup.procs"; fi
    exec "$@" ) >"$TMP/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  sleep 5   # start-up spread (randstart) and warm-up
  local c0 c1 t0 t1
  t0=$(date +%s.%N); c0=$(cpu_ns "$cg")
  sleep "$DURATION"
  t1=$(date +%s.%N); c1=$(cpu_ns "$cg")
  kill "$pid" 2>/dev/null || true
  local procs
  if [ -f "$cg/tasks" ]; then procs=$(cat "$cg/tasks"); else procs=$(cat "$cg/cgroup.procs"); fi
  [ -n "$procs" ] && kill $procs 2>/dev/null || true
  sleep 1
  sleep 1.2   # nginx flushes its log every second
  local cpu rate
  cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.1f", (b-a)/1e9/(t1-t0)*100}')
  # Requests nginx logged inside the window, by their own timestamps.
  rate=$(awk -v t0="$t0" -v t1="$t1" '$1 >= t0 && $1 < t1 {n++} END{printf "%.0f", n/(t1-t0)}' "$TMP/access.log")
  printf '%-6s %8s checks/s  %6s%% of one core  %s\n' "$name" "$rate" "$cpu" \
    "$(awk -v c="$cpu" -v r="$rate" 'BEGIN{ if (r>0) printf "(%.1f us CPU per check)", c/100*1e6/r }')"
  RESULT_CPU=$cpu; RESULT_RATE=$rate
}

echo "targets: $N HTTP servers on 127.0.1.1.., interval 1s, measured ${DURATION}s each"
measure herd "$HERD" daemon --config "$TMP/herd.toml" --socket "$TMP/herd.sock"
H_CPU=$RESULT_CPU; H_RATE=$RESULT_RATE
if [ "$MON" = 1 ]; then
  measure mon /usr/sbin/mon -c "$TMP/mon.cf" -B "$TMP" -L "$TMP" -D "$TMP" -P "$TMP/mon.pid" -p 12583 -t 12584
  awk -v hc="$H_CPU" -v hr="$H_RATE" -v mc="$RESULT_CPU" -v mr="$RESULT_RATE" 'BEGIN{
    if (hr > 0 && mr > 0) printf "CPU per check: mon/herd x%.1f; checks/s: herd/mon x%.1f\n", (mc/mr)/(hc/hr), hr/mr }'
fi
