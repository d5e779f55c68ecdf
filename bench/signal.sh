#!/usr/bin/env bash
# Signaling: `peerlink serve` next to the usual hand-written Node.js + `ws` signaling server
# (bench/signal-ref/server.mjs, same protocol), same machine, same run, same load generator
# (bench/src/bin/signal-load.rs): idle WebSocket peers held and memory per connection, then
# pairs bouncing `signal`s: messages/s, one-way latency p50/p99, messages per server
# CPU-second. Prints every number and the ratios; asserts nothing about speed.
#
#   bench/signal.sh                       # 5000 idle peers, 200 chatting pairs, 10 s
#   IDLE=10000 PAIRS=500 SECONDS_=20 ROUNDS=2 bench/signal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-5000}
PAIRS=${PAIRS:-200}
IN_FLIGHT=${IN_FLIGHT:-4}
DURATION=${SECONDS_:-10}

cargo build --release -q -p peerlink-cli -p peerlink-bench
if [ ! -d bench/signal-ref/node_modules/ws ]; then
    (cd bench/signal-ref && npm install --no-audit --no-fund --silent)
fi
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT

load() { # name url pid
    target/release/signal-load --url "$2" --pid "$3" --idle "$IDLE" --pairs "$PAIRS" \
        --in-flight "$IN_FLIGHT" --seconds "$DURATION" >"$tmp/$1.txt"
    sed "s/^/$1 /" "$tmp/$1.txt"
}
value() { sed -nE "s/^$2=(.*)/\\1/p" "$tmp/$1.txt"; }

declare -A sums
for round in $(seq "$ROUNDS"); do
    echo "# round $round"
    # Not the last round's output (the redirects happen in the children, maybe after
    # wait_for_line has looked).
    rm -f "$tmp/pl.out" "$tmp/ref.out"
    # Limits raised so the load is not refused: the benchmark measures relaying, not policing.
    target/release/peerlink serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --relay-ip 127.0.0.1 \
        --messages-per-second 100000 --max-room-peers 2 >"$tmp/pl.out" 2>"$tmp/pl.log" &
    pl_pid=$!
    PIDS+=($pl_pid)
    wait_for_line "$tmp/pl.out" "signaling on ws://"
    url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/pl.out")
    load peerlink "$url" "$pl_pid"
    kill "$pl_pid"
    wait "$pl_pid" 2>/dev/null || true

    port=$(free_port)
    node bench/signal-ref/server.mjs "$port" >"$tmp/ref.out" 2>&1 &
    ref_pid=$!
    PIDS+=($ref_pid)
    wait_for_line "$tmp/ref.out" "listening on"
    load node-ws "ws://127.0.0.1:$port/ws" "$ref_pid"
    kill "$ref_pid"
    wait "$ref_pid" 2>/dev/null || true

    for name in peerlink node-ws; do
        for key in bytes_per_connection chat_messages_per_second latency_p50_us latency_p99_us messages_per_cpu_second; do
            sums[$name.$key]=$(echo "${sums[$name.$key]:-0} + $(value $name $key)" | bc -l)
        done
    done
done

avg() { echo "${sums[$1.$2]} / $ROUNDS" | bc -l; }
printf '\n%-10s %14s %12s %10s %10s %14s\n' server "bytes/conn" "msgs/s" "p50 µs" "p99 µs" "msgs/CPU-s"
for name in peerlink node-ws; do
    printf '%-10s %14.0f %12.0f %10.0f %10.0f %14.0f\n' "$name" "$(avg $name bytes_per_connection)" \
        "$(avg $name chat_messages_per_second)" "$(avg $name latency_p50_us)" "$(avg $name latency_p99_us)" \
        "$(avg $name messages_per_cpu_second)"
done
ratio() { echo "scale=2; $(avg peerlink "$1") / $(avg node-ws "$1")" | bc -l; }
echo
echo "peerlink / node-ws: memory per connection $(ratio bytes_per_connection)x, messages/s $(ratio chat_messages_per_second)x, messages per CPU-second $(ratio messages_per_cpu_second)x, p99 latency $(ratio latency_p99_us)x"
echo "($IDLE idle peers held, $PAIRS pairs bouncing signals with $IN_FLIGHT in flight each way, ${DURATION}s, $ROUNDS round(s))"
