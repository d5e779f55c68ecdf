#!/usr/bin/env bash
# SFU forwarding load: `sfu-load` (bench/src/bin/sfu-load.rs, our own native peer) puts
# PUBLISHERS publishers (VP8-shaped video, one layer, and Opus-shaped audio each) and
# SUBSCRIBERS subscribers in one room of `peerlink serve --room-mode sfu`, inside a network
# namespace of this script's own, and prints forwarded packets per second and per server
# CPU-second, loss and the delay from publisher to subscriber. Asserts nothing about speed.
#
# Not side by side yet: Janus's VideoRoom (Debian `janus`) is the reference issue 18 names;
# it is neither installed by scripts/install-test-deps.sh nor driven by sfu-load yet.
#
#   bench/sfu.sh [path/to/peerlink]   # ROUNDS=1 PUBLISHERS=2 SUBSCRIBERS=6 SECONDS_=15
#                                     # VIDEO_KBPS=800 THREADS=1
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
ROUNDS=${ROUNDS:-1}
PUBLISHERS=${PUBLISHERS:-2}
SUBSCRIBERS=${SUBSCRIBERS:-6}
DURATION=${SECONDS_:-15}
VIDEO_KBPS=${VIDEO_KBPS:-800}
THREADS=${THREADS:-1}

target=${CARGO_TARGET_DIR:-target}
# One build for both (as the other benches do): separate ones would unify features apart.
cargo build --release -q -p peerlink-cli -p peerlink-bench
peerlink=$(realpath "${1:-$target/release/peerlink}")
load=$(realpath "$target/release/sfu-load")

ns=plsfuload$$
tmp=$(mktemp -d)
cleanup() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.3
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp" || true
}
trap cleanup EXIT
veth_namespace "$ns" 203.0.113.10/24
ip -n "$ns" addr add 203.0.113.1/24 dev v1
ip -n "$ns" route add default via 203.0.113.1 dev v0

for round in $(seq "$ROUNDS"); do
    ip netns exec "$ns" "$peerlink" serve --http 127.0.0.1:0 --listen 203.0.113.10:3478 --relay-ip 203.0.113.10 \
        --allow-peer 203.0.113.0/24 --allow-loopback-peers --room-mode sfu >"$tmp/serve.out" 2>"$tmp/serve.log" &
    serve=$!
    wait_for_line "$tmp/serve.out" "signaling on ws://" 15
    ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
    # `ip netns exec` execs the server: $! is its process.
    [ "$(cat /proc/$serve/comm)" = peerlink ] || { echo "no server process at $serve" >&2; exit 1; }
    echo "# round $round: $PUBLISHERS publishers x $SUBSCRIBERS subscribers, ${DURATION}s, server pid $serve"
    status=0
    timeout $((DURATION + 90)) ip netns exec "$ns" "$load" --url "$ws" --pid "$serve" --room "load-$round" \
        --publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS" --seconds "$DURATION" \
        --video-kbps "$VIDEO_KBPS" --threads "$THREADS" --bind 203.0.113.10 >"$tmp/load.txt" 2>"$tmp/load.err" || status=$?
    cat "$tmp/load.txt"
    if [ $status -ne 0 ]; then
        echo "sfu-load failed (exit $status):" >&2
        tail -5 "$tmp/load.err" >&2
        tail -15 "$tmp/serve.log" >&2
        exit 1
    fi
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$serve/status")
    echo "server_peak_rss_kb=$rss"
    kill "$serve"
    wait "$serve" 2>/dev/null || true
done
