#!/usr/bin/env bash
# bench/failover.sh — director failover time: herd's VRRP against keepalived's, same topology.
#
# In network namespaces (herd-testkit): two directors, two real servers and a client on one
# bridge. The client asks GET / through the VIP every 10 ms. The master director is killed
# (SIGKILL) at a pseudo-random point of the advert cycle; the figure is the time from the kill
# to the client's first answer through the VIP. Modes, interleaved run by run:
#   herd             herd's VRRP, advert 100 ms
#   keepalived-1s    keepalived's VRRP (advert_int 1) beside herd as a load balancer only
#   keepalived-0.1s  the same with advert_int 0.1
# Prints min/median/max per mode. Needs root, iproute2, nftables, python3 and keepalived
# (--install installs them without touching any service). Traffic stays inside the
# namespaces; all are removed on exit, with the processes started in them. A keepalived of the
# machine's own keeps running: the benchmark's run in its namespaces with their own pid files.
#
#   bash bench/failover.sh [--install] [--runs N] [--modes herd,keepalived-1s] [--json FILE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-10}
MODES=${MODES:-herd,keepalived-1s,keepalived-0.1s}
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --install)
            # Without starting, stopping or disabling the system's keepalived: the benchmark's
            # own run inside its namespaces (.ci/install).
            bash .ci/install keepalived iproute2 nftables python3
            ;;
        --runs) RUNS=$2; shift ;;
        --modes) MODES=$2; shift ;;
        --json) OUT=$(realpath -m "$2"); shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "bench/failover.sh needs root (network namespaces)" >&2; exit 1; }
case "$RUNS" in ''|*[!0-9]*) echo "--runs wants a number, got '$RUNS'" >&2; exit 2 ;; esac

RUNS=$RUNS MODES=$MODES OUT=$OUT exec cargo test -q -p herd --test it vrrp::bench::failover_benchmark \
    -- --ignored --exact --nocapture --test-threads=1
