#!/usr/bin/env bash
# bench/nft-update-latency.sh — how long nft(8) takes to replace a Maglev-sized map, as a
# kernel data plane would on every health verdict, drain or weight change (issue 23: netlink
# directly or nft's JSON interface, chosen by update latency).
#
# In a network namespace of its own (removed on exit), it creates a netdev table with a
# `mark : ether_addr` map and replaces the map's contents in one transaction (flush + add,
# atomic: no packet sees half a table) with N entries, N the kernel's Maglev primes for about
# 2, 10, 100 and 650 real servers. Each size is loaded 7 times in text and in JSON (`nft -j`);
# the best and the mean wall time are printed, and the cost of `ip netns exec` alone (the
# process start every nft call pays) for reference. Nothing leaves the namespace; every loop is
# bounded.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "nft-update-latency: needs root (a network namespace)" >&2; exit 1; }
command -v nft >/dev/null || { echo "nft-update-latency: needs nft (apt-get install nftables)" >&2; exit 1; }
ns=herd-t-nftlat-$$
tmp=$(mktemp -d)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
ip netns exec "$ns" nft -f - <<'NFT'
table netdev herdlat {
  map slots { type mark : ether_addr; }
}
NFT

gen() { # gen N text|json: the transaction that makes the map N entries long
    python3 - "$1" "$2" <<'PY'
import json, sys
n, fmt = int(sys.argv[1]), sys.argv[2]
macs = ["02:00:00:00:%02x:%02x" % (i // 256, i % 256) for i in range(1, 651)]
if fmt == "text":
    elems = ", ".join("%d : %s" % (i, macs[i % len(macs)]) for i in range(n))
    print("flush map netdev herdlat slots\nadd element netdev herdlat slots { %s }" % elems)
else:
    m = {"family": "netdev", "table": "herdlat", "name": "slots"}
    print(json.dumps({"nftables": [{"flush": {"map": m}},
        {"add": {"element": dict(m, elem=[[i, macs[i % len(macs)]] for i in range(n)])}}]}))
PY
}

now_us() { echo $(( $(date +%s%N) / 1000 )); }
time_runs() { # time_runs CMD...: best and mean of 7 runs, in µs
    local best=999999999 total=0 t0 d
    for _ in 1 2 3 4 5 6 7; do
        t0=$(now_us); "$@" >/dev/null; d=$(( $(now_us) - t0 ))
        total=$((total + d)); [ "$d" -lt "$best" ] && best=$d
    done
    echo "best $((best / 1000)).$(( (best % 1000) / 100 )) ms, mean $((total / 7000)) ms"
}

echo "ip netns exec true (process start):  $(time_runs ip netns exec "$ns" true)"
for n in 251 1009 10007 65537; do
    gen "$n" text >"$tmp/t.nft"
    gen "$n" json >"$tmp/t.json"
    printf '%-6s entries  text: %-32s json: %s\n' "$n" \
        "$(time_runs ip netns exec "$ns" nft -f "$tmp/t.nft")" \
        "$(time_runs ip netns exec "$ns" nft -j -f "$tmp/t.json")"
done
got=$(ip netns exec "$ns" nft -j list map netdev herdlat slots | python3 -c 'import json,sys; print(sum(len(o["map"].get("elem",[])) for o in json.load(sys.stdin)["nftables"] if "map" in o))')
echo "check: the map holds $got entries (last load: 65537)"
