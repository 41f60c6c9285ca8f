#!/usr/bin/env bash
# bench/exec-vs-peers.sh — `herd exec true` on many loopback nodes against pdsh and clush over ssh.
#
# Starts N herd agents (each a `herd daemon` with its own certificate, on 127.0.X.Y) and one
# OpenSSH server of the benchmark's own (127.0.0.1:2222, key authentication, curve25519 key
# exchange; every node name points at it, so each ssh connection is a full handshake as it
# would be to another host). Then, interleaved round by round, times:
#   herd            herd exec -a true (direct connections: --fanout N)
#   herd-tree       herd exec -a --fanout K true (agents relay down a tree)
#   pdsh            pdsh -R ssh -f F -w NODES true   (F: pdsh's default 32, or --fanout)
#   clush           clush -f F -w NODES true         (F: clush's default 64, or --fanout)
# and prints min/median/max wall time per mode and each one's ratio to herd's median.
# A second size (--tree-nodes, default 1000) runs herd through the tree only.
# Needs root; --install installs pdsh, clustershell and openssh (client and server) without
# starting or stopping any service (.ci/install). Nothing leaves loopback; the agents and the
# sshd it started (by pid) and the scratch directory are removed on exit; the system's sshd,
# if any, is not touched.
#
#   bash bench/exec-vs-peers.sh [--install] [--nodes 256] [--tree-nodes 1000] [--rounds 5]
#                               [--fanout F] [--tree-fanout 32]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODES=256 TREE_NODES=1000 ROUNDS=5 FANOUT= TREE_FANOUT=32
while [ $# -gt 0 ]; do
    case "$1" in
        --install)
            # Without starting the system's sshd: the benchmark runs its own (.ci/install).
            bash .ci/install pdsh clustershell openssh-client openssh-server
            ;;
        --nodes) NODES=$2; shift ;;
        --tree-nodes) TREE_NODES=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --fanout) FANOUT=$2; shift ;;
        --tree-fanout) TREE_FANOUT=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PDSH_FANOUT=${FANOUT:-32} CLUSH_FANOUT=${FANOUT:-64}
for v in "$NODES" "$TREE_NODES" "$ROUNDS" "$PDSH_FANOUT" "$CLUSH_FANOUT" "$TREE_FANOUT"; do
    case "$v" in ''|*[!0-9]*) echo "numbers expected, got '$v'" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "bench/exec-vs-peers.sh needs root (sshd, agents running as root)" >&2; exit 1; }
for c in pdsh clush /usr/sbin/sshd ssh-keygen; do
    command -v "$c" >/dev/null || { echo "$c is missing (--install)" >&2; exit 1; }
done

cargo build -q --release -p herd
HERD=$PWD/target/release/herd
WORK=$(mktemp -d /tmp/herd-bench-exec.XXXXXX)
PIDS=()
# sshd wants its privilege-separation directory; made here only if missing, and then removed.
MADE_RUN_SSHD=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
    if [ "$MADE_RUN_SSHD" = 1 ]; then rmdir /run/sshd 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# Node i (1-based) → 127.0.(1 + (i-1)/250).(1 + (i-1)%250), name node0001…
addr() { echo "127.0.$(( 1 + ($1 - 1) / 250 )).$(( 1 + ($1 - 1) % 250 ))"; }
MAX=$(( NODES > TREE_NODES ? NODES : TREE_NODES ))
PKI=$WORK/pki
"$HERD" init --pki "$PKI" >/dev/null
"$HERD" cert issue "node[0001-$(printf %04d "$MAX")]" --pki "$PKI" >/dev/null
{
    echo "[nodes]"
    for i in $(seq 1 "$MAX"); do echo "node$(printf %04d "$i") = \"$(addr "$i")\""; done
    echo "[agent]"
    echo "pki = \"$PKI\""
} > "$WORK/client.toml"

echo "starting $MAX agents ..." >&2
mkdir -p "$WORK/agents"
for i in $(seq 1 "$MAX"); do
    n=node$(printf %04d "$i")
    cat > "$WORK/agents/$n.toml" <<CFG
[daemon]
socket = "$WORK/agents/$n.sock"
log-level = "warn"
[lb]
workers = 1
[agent]
listen = ["$(addr "$i")"]
name = "$n"
pki = "$PKI"
audit-log = "none"
CFG
    "$HERD" daemon --config "$WORK/agents/$n.toml" 2>>"$WORK/agents/log" </dev/null &
    PIDS+=($!)
done
for i in $(seq 1 "$MAX"); do
    n=node$(printf %04d "$i")
    for _ in $(seq 1 300); do [ -S "$WORK/agents/$n.sock" ] && break; sleep 0.1; done
    [ -S "$WORK/agents/$n.sock" ] || { echo "agent $n did not start:"; tail "$WORK/agents/log"; exit 1; } >&2
done
echo "agents up; resident memory: $(ps -o rss= -p "$(IFS=,; echo "${PIDS[*]}")" | awk '{s+=$1} END {printf "%.0f MiB total, %.1f MiB each", s/1024, s/1024/NR}')" >&2

# sshd of our own on 127.0.0.1:2222, and an ssh config that sends every node there.
mkdir -p "$WORK/ssh"
if [ ! -d /run/sshd ]; then mkdir -m 0755 /run/sshd; MADE_RUN_SSHD=1; fi
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id"
cp "$WORK/ssh/id.pub" "$WORK/ssh/authorized_keys"
cat > "$WORK/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1:2222
HostKey $WORK/ssh/host_key
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 2000
MaxSessions 2000
KexAlgorithms curve25519-sha256
LogLevel ERROR
CFG
/usr/sbin/sshd -D -f "$WORK/ssh/sshd_config" &
PIDS+=($!)
cat > "$WORK/ssh/config" <<CFG
Host node*
    HostName 127.0.0.1
    Port 2222
    User root
    IdentityFile $WORK/ssh/id
    IdentitiesOnly yes
    KexAlgorithms curve25519-sha256
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
CFG
sleep 0.5
ssh -F "$WORK/ssh/config" node0001 true || { echo "ssh to the benchmark's sshd failed" >&2; exit 1; }

SET="node[0001-$(printf %04d "$NODES")]"
TREESET="node[0001-$(printf %04d "$TREE_NODES")]"
export PDSH_RCMD_TYPE=ssh PDSH_SSH_ARGS="-F $WORK/ssh/config %h"
declare -A T
# Runs a mode once, checks every node answered, records the wall time.
run() {
    local mode=$1 want=$2; shift 2
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$("$@" 2>"$WORK/err" | wc -l) || { echo "$mode failed:"; cat "$WORK/err"; exit 1; } >&2
    t1=$(date +%s.%N)
    [ "$out" = "$want" ] || { echo "$mode: $out lines, want $want"; head "$WORK/err"; exit 1; } >&2
    T[$mode]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}') "
}
CMD='echo ok'
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    run herd "$NODES" "$HERD" exec --config "$WORK/client.toml" -w "$SET" --fanout "$NODES" -- "$CMD"
    run herd-tree "$NODES" "$HERD" exec --config "$WORK/client.toml" -w "$SET" --fanout "$TREE_FANOUT" -- "$CMD"
    run pdsh "$NODES" pdsh -f "$PDSH_FANOUT" -w "$SET" "$CMD"
    run clush "$NODES" clush -f "$CLUSH_FANOUT" -o "-F $WORK/ssh/config" -w "$SET" "$CMD"
    run "herd-tree-$TREE_NODES" "$TREE_NODES" "$HERD" exec --config "$WORK/client.toml" -w "$TREESET" --fanout "$TREE_FANOUT" -- "$CMD"
done

stats() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.3f %.3f %.3f", a[1], a[int((NR+1)/2)], a[NR]}'; }
HERD_MED=$(echo "${T[herd]}" | stats | cut -d' ' -f2)
printf '\n%-16s %6s %9s %9s %9s %10s\n' mode nodes "min s" "median s" "max s" "÷ herd"
for mode in herd herd-tree pdsh clush "herd-tree-$TREE_NODES"; do
    read -r mn md mx <<<"$(echo "${T[$mode]}" | stats)"
    n=$NODES; [ "$mode" = "herd-tree-$TREE_NODES" ] && n=$TREE_NODES
    printf '%-16s %6s %9s %9s %9s %10.1f\n' "$mode" "$n" "$mn" "$md" "$mx" "$(awk -v a="$md" -v b="$HERD_MED" 'BEGIN {print a / b}')"
done
echo "(fanout: herd $NODES direct, herd-tree $TREE_FANOUT, pdsh $PDSH_FANOUT, clush $CLUSH_FANOUT; command: $CMD; $ROUNDS rounds)"
