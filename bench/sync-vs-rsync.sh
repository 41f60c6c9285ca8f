#!/usr/bin/env bash
# bench/sync-vs-rsync.sh — `herd sync push` against an rsync daemon with parallel pulls.
#
# A 1 GiB tree (10,000 small files in 100 directories and 3 files of 300 MiB) goes to 8 nodes:
#   herd   herd sync push SRC -w node[1-8] --delete  (8 agents, each in a mount namespace of its
#          own with a private tmpfs at the same destination path, as 8 hosts would have)
#   rsync  an rsync daemon serving SRC as a module, and 8 parallel
#          `rsync -a --delete rsync://127.0.0.1:8873/bench/ DEST_i/`
# Then 1 % of the content changes (100 small files rewritten, 1 % of each large file) and both
# sync again. Each tool runs its two rounds on its own, from the same pristine tree, and its
# copies go before the other runs (8 copies at a time, not 16: on a VM short of memory the
# second tool would pay for reclaiming the first's pages); rounds alternate which goes first.
# Prints wall time per round and the content bytes on the wire (herd: what its agents asked
# for, from `herd sync push`; rsync: "Total bytes received" of each pull). Everything lives in
# tmpfs (the disk is not what is measured); needs root, rsync and ~12 GiB of RAM. Nothing
# leaves loopback; agents, daemons, mounts and files go on exit.
#
#   bash bench/sync-vs-rsync.sh [--nodes 8] [--rounds 1] [--fanout K] [--lan RATE] [--only herd|rsync]
#
# --fanout K   herd's --fanout: the source sends to K nodes, agents relay to the rest (default
#              2, herd's own default; 8 or more: direct to each node)
# --lan RATE   each host (the source and every node) in a network namespace of its own, with a
#              link of RATE each way (tc tbf, e.g. 1gbit) to a bridge: a LAN, where the source's
#              link is what 8 pulls share. Without it all traffic is loopback and the 2 vCPUs,
#              shared by all 9 "hosts", are the limit.
# --only       runs one side (to profile it, e.g. under `perf record -a -g`); no ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODES=8 ROUNDS=1 ONLY= FANOUT=2 LAN=
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --fanout) FANOUT=$2; shift ;;
        --lan) LAN=$2; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "needs root (mount namespaces, tmpfs)" >&2; exit 1; }
command -v rsync >/dev/null || { echo "rsync is missing" >&2; exit 1; }

cargo build -q --release -p herd
HERD=$PWD/target/release/herd
W=/tmp/herd-bench-sync
PIDS=()
NS=herdbench
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$LAN" ]; then
        for n in src lan $(seq -f 'n%g' 1 "$NODES"); do ip netns del "$NS-$n" 2>/dev/null || true; done
    fi
    umount "$W" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
mkdir -p "$W"
mount -t tmpfs -o size=20g tmpfs "$W"
mkdir -p "$W/src" "$W/dest" "$W/rsync" "$W/agents"

# Where each host is: its address, and the prefix its commands run under.
SRC_ADDR=127.0.0.1 SRC_RUN=()
node_addr() { echo "127.0.9.$1"; }
if [ -n "$LAN" ]; then
    command -v tc >/dev/null || { echo "--lan needs tc (iproute2)" >&2; exit 1; }
    ip netns add "$NS-lan"
    ip -n "$NS-lan" link add br0 type bridge
    ip -n "$NS-lan" link set br0 up
    host() { # host NAME ADDR: a namespace with a RATE link to the bridge
        ip netns add "$NS-$1"
        ip link add "v-$1" netns "$NS-$1" type veth peer name "p-$1" netns "$NS-lan"
        ip -n "$NS-lan" link set "p-$1" master br0 up
        ip -n "$NS-$1" addr add "$2/24" dev "v-$1"
        ip -n "$NS-$1" link set "v-$1" up
        ip -n "$NS-$1" link set lo up
        tc -n "$NS-$1" qdisc add dev "v-$1" root tbf rate "$LAN" burst 256kb latency 20ms
        tc -n "$NS-lan" qdisc add dev "p-$1" root tbf rate "$LAN" burst 256kb latency 20ms
    }
    host src 10.77.0.1
    for i in $(seq 1 "$NODES"); do host "n$i" "10.77.0.$((10 + i))"; done
    SRC_ADDR=10.77.0.1 SRC_RUN=(ip netns exec "$NS-src")
    node_addr() { echo "10.77.0.$((10 + $1))"; }
fi
# The prefix of node I's commands: its namespace (--lan), else none. Used as
# "${RUN[@]}" cmd ... so that a command sent to the background is the process itself.
node_run() {
    RUN=()
    if [ -n "$LAN" ]; then RUN=(ip netns exec "$NS-n$1"); fi
}

echo "making the tree ..." >&2
python3 - "$W/src" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}", "wb") as fh:
            fh.write(rnd.randbytes(rnd.randint(1000, 20000)))
for i in range(3):
    with open(f"{root}/large{i}.bin", "wb") as fh:
        for _ in range(300):
            fh.write(rnd.randbytes(1 << 20))
PY
du -sh "$W/src" >&2

"$HERD" init --pki "$W/pki" >/dev/null
"$HERD" cert issue "node[1-$NODES]" --pki "$W/pki" >/dev/null
{
    echo "[nodes]"
    for i in $(seq 1 "$NODES"); do echo "node$i = \"$(node_addr "$i")\""; done
    echo "[agent]"
    echo "pki = \"$W/pki\""
} > "$W/client.toml"
for i in $(seq 1 "$NODES"); do
    cat > "$W/agents/node$i.toml" <<CFG
[daemon]
socket = "$W/agents/node$i.sock"
log-level = "warn"
[lb]
workers = 1
[agent]
listen = ["$(node_addr "$i")"]
name = "node$i"
pki = "$W/pki"
audit-log = "none"
CFG
    # A host of its own, as far as the destination goes: a private tmpfs at $W/dest.
    node_run "$i"
    "${RUN[@]}" unshare -m --propagation private sh -c \
        "mount -t tmpfs -o size=2g tmpfs '$W/dest' && exec '$HERD' daemon --config '$W/agents/node$i.toml'" \
        2>>"$W/agents/log" </dev/null &
    PIDS+=($!)
done
for i in $(seq 1 "$NODES"); do
    for _ in $(seq 1 100); do [ -S "$W/agents/node$i.sock" ] && break; sleep 0.1; done
done

cat > "$W/rsyncd.conf" <<CFG
port = 8873
address = $SRC_ADDR
use chroot = no
max connections = 0
[bench]
path = $W/src
read only = yes
CFG
"${SRC_RUN[@]}" rsync --daemon --no-detach --config="$W/rsyncd.conf" &
PIDS+=($!)
sleep 0.5

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
herd_round() {
    local t0 t1 out
    t0=$(now)
    out=$("${SRC_RUN[@]}" "$HERD" sync push "$W/src" --config "$W/client.toml" -w "node[1-$NODES]" --dest "$W/dest" --delete --fanout "$FANOUT")
    t1=$(now)
    HERD_T=$(secs "$t0" "$t1")
    HERD_B=$(echo "$out" | sed -n 's/.* bytes, \([0-9]*\) sent.*/\1/p' | awk '{s+=$1} END {print s+0}')
}
rsync_round() {
    local t0 t1 i rp=()
    t0=$(now)
    for i in $(seq 1 "$NODES"); do
        node_run "$i"
        "${RUN[@]}" rsync -a --delete --stats "rsync://$SRC_ADDR:8873/bench/" "$W/rsync/n$i/" > "$W/rsync/stats$i" &
        rp+=($!)
    done
    wait "${rp[@]}"
    t1=$(now)
    RSYNC_T=$(secs "$t0" "$t1")
    RSYNC_B=$(cat "$W"/rsync/stats* | sed -n 's/^Total bytes received: \([0-9,]*\).*/\1/p' | tr -d , | awk '{s+=$1} END {print s+0}')
}
change() {
    python3 - "$W/src" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(7)
for n in range(100):
    p = f"{root}/d{rnd.randrange(100):03}/f{rnd.randrange(100):03}"
    with open(p, "wb") as fh:
        fh.write(rnd.randbytes(rnd.randint(1000, 20000)))
for i in range(3):
    p = f"{root}/large{i}.bin"
    size = os.path.getsize(p)
    with open(p, "r+b") as fh:
        fh.seek(rnd.randrange(size - (3 << 20)))
        fh.write(rnd.randbytes(3 << 20))
PY
}

# Each tool runs its two rounds from the same pristine tree, and its copies go before the other
# tool runs: 8 copies of 1 GiB at a time, not 16 (a VM short of memory would make whichever
# tool runs second pay for reclaiming the first's pages).
cp -a "$W/src" "$W/pristine"
herd_rounds() {
    herd_round; H1=$HERD_T; HB1=$HERD_B
    change
    herd_round; H2=$HERD_T; HB2=$HERD_B
    for i in $(seq 1 "$NODES"); do nsenter -t "${PIDS[$((i-1))]}" -m -- sh -c "rm -rf '$W/dest'/*" 2>/dev/null || true; done
}
rsync_rounds() {
    rsync_round; R1=$RSYNC_T; RB1=$RSYNC_B
    change
    rsync_round; R2=$RSYNC_T; RB2=$RSYNC_B
    rm -rf "$W/rsync"/n*
}
restore() { rm -rf "$W/src"; cp -a "$W/pristine" "$W/src"; }
row() {
    local ratio
    ratio=$(awk -v a="$3" -v b="$2" 'BEGIN {if (a > 0 && b > 0) printf "%.2f", a / b; else print "-"}')
    printf '%-26s %10s %10s %8s %14s %14s\n' "$1" "$2" "$3" "$ratio" "$4" "$5"
}
TREE=$(du -sb "$W/src" | cut -f1)
printf '\n%-26s %10s %10s %8s %14s %14s\n' round "herd s" "rsync s" "rsync÷herd" "herd bytes" "rsync bytes"
for r in $(seq 1 "$ROUNDS"); do
    H1=0 H2=0 HB1=0 HB2=0 R1=0 R2=0 RB1=0 RB2=0
    # Alternate which tool goes first.
    if [ $((r % 2)) = 1 ]; then
        [ "$ONLY" = rsync ] || { restore; herd_rounds; }
        [ "$ONLY" = herd ] || { restore; rsync_rounds; }
    else
        [ "$ONLY" = herd ] || { restore; rsync_rounds; }
        [ "$ONLY" = rsync ] || { restore; herd_rounds; }
    fi
    row "full copy to $NODES nodes" "$H1" "$R1" "$HB1" "$RB1"
    row "after a 1 % change" "$H2" "$R2" "$HB2" "$RB2"
done
echo "(tree: $TREE bytes; bytes: content on the wire summed over the nodes; herd's excludes TLS and manifests, rsync's is its 'Total bytes received')"
