#!/usr/bin/env bash
# STUN Binding throughput: `peerlink stun` next to coturn's `turnserver --stun-only`, same
# load generator, same machine, same run. Prints answered requests per second, the
# server's CPU-seconds, requests per CPU-second, and the ratios.
#
#   bench/stun.sh                 # 3 rounds of 5 s per server (about 40 s)
#   ROUNDS=1 DURATION=2 bench/stun.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-4}
WORKERS=${WORKERS:-$(nproc)}
command -v turnserver >/dev/null || { echo "turnserver missing: run scripts/install-test-deps.sh" >&2; exit 1; }

cargo build --release -q -p peerlink-cli -p peerlink-bench
bin=target/release
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT

pl_port=$(free_port)
"$bin/peerlink" stun --listen "127.0.0.1:$pl_port" --udp-workers "$WORKERS" >"$tmp/peerlink.log" 2>&1 &
PIDS+=($!)
pl_pid=$!
# coturn: STUN only, one UDP thread per core (its default), nothing else listening.
ct_port=$(free_port)
turnserver -n --listening-ip=127.0.0.1 --listening-port="$ct_port" --stun-only --no-tls --no-dtls \
    --no-cli --no-rfc5780 --relay-threads="$WORKERS" --log-file="$tmp/coturn.log" --simple-log \
    --pidfile="$tmp/coturn.pid" >/dev/null 2>&1 &
PIDS+=($!)
ct_pid=$!
wait_for_line "$tmp/peerlink.log" "stun listening"
wait_for_line "$tmp/coturn.log" "Total General servers|turn server id=0 created"
sleep 0.5

load() { "$bin/stun-load" --duration "$DURATION" --clients "$CLIENTS" "$@"; }
echo "# closed loop (saturation), $ROUNDS rounds of ${DURATION}s, $CLIENTS clients, $WORKERS server threads each"
for _ in $(seq "$ROUNDS"); do
    load --server "127.0.0.1:$pl_port" --name peerlink --server-pid "$pl_pid" | tee -a "$tmp/closed"
    load --server "127.0.0.1:$ct_port" --name coturn --server-pid "$ct_pid" | tee -a "$tmp/closed"
done

# Open loop below saturation: half of the slower server's median saturation rate.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { grep "name=$1 " "$2" | sed -E "s/.* $3=([0-9.]+).*/\1/"; }
slower=$(printf '%s\n%s\n' "$(field peerlink "$tmp/closed" answered_per_s | median)" \
    "$(field coturn "$tmp/closed" answered_per_s | median)" | sort -n | head -1)
rate=$((${slower%.*} / 2))
echo "# open loop at $rate requests/s (half the slower server's saturation rate)"
load --server "127.0.0.1:$pl_port" --name peerlink --server-pid "$pl_pid" --mode open --rate "$rate" | tee -a "$tmp/open"
load --server "127.0.0.1:$ct_port" --name coturn --server-pid "$ct_pid" --mode open --rate "$rate" | tee -a "$tmp/open"

pl_rps=$(field peerlink "$tmp/closed" answered_per_s | median)
ct_rps=$(field coturn "$tmp/closed" answered_per_s | median)
pl_cpu=$(field peerlink "$tmp/closed" answered_per_cpu_s | median)
ct_cpu=$(field coturn "$tmp/closed" answered_per_cpu_s | median)
echo "# summary (medians of the closed-loop rounds)"
printf '%-10s %14s %22s %12s\n' server "answered/s" "answered/CPU-second" "open-loop lost"
printf '%-10s %14s %22s %12s\n' peerlink "$pl_rps" "$pl_cpu" "$(field peerlink "$tmp/open" lost)"
printf '%-10s %14s %22s %12s\n' coturn "$ct_rps" "$ct_cpu" "$(field coturn "$tmp/open" lost)"
awk -v a="$pl_rps" -v b="$ct_rps" -v c="$pl_cpu" -v d="$ct_cpu" \
    'BEGIN { printf "ratio peerlink/coturn: answered/s %.2fx, answered per CPU-second %.2fx\n", a / b, c / d }'
