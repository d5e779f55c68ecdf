#!/usr/bin/env bash
# TURN memory and scale: `peerlink turn` holds 2,000 allocations (each with a permission and a
# channel) while round trips flow through every one of them and all of them are refreshed
# (allocation, permission, channel) every few seconds, first undisturbed, then while 50
# abusive clients flood it with unauthenticated Allocates and bad ChannelData. The load
# generator is bench's turn-soak (our own TURN client). It checks: no round trip lost, every
# refresh answered, nothing refused, the server's resident memory flat in each phase, no
# allocation created for the abusers (the server's gauge stays at 2,000) and none left after
# the clients delete theirs. It prints the bytes of resident memory per allocation.
#   tests/e2e/turn-soak.sh [PEERLINK] [TURN_SOAK]
#   ALLOCATIONS=N SOAK_SECONDS=S ABUSERS=M RELAY_THREADS=T change the defaults (2000, 20, 50,
#   and the server's own: one relay thread per core).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
soak=${2:-target/release/turn-soak}
ALLOCATIONS=${ALLOCATIONS:-2000}
SECONDS_PER_PHASE=${SOAK_SECONDS:-20}
ABUSERS=${ABUSERS:-50}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT

"$peerlink" turn --listen 127.0.0.1:0 --relay-ip 127.0.0.1 --realm example.test --user test:secret \
    --allow-loopback-peers --max-allocations-per-user "$ALLOCATIONS" --metrics 127.0.0.1:0 \
    ${RELAY_THREADS:+--relay-threads "$RELAY_THREADS"} >"$tmp/turn.out" 2>"$tmp/turn.log" &
turn_pid=$!
PIDS+=("$turn_pid")
wait_for_line "$tmp/turn.out" "metrics at"
port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/turn.out")
metrics=$(sed -nE 's/.*metrics at (http:[^ ]+).*/\1/p' "$tmp/turn.out")

status=0
# The soak bounds itself: setup at most 60 s, two phases of SECONDS, 5 s drains.
timeout $((2 * SECONDS_PER_PHASE + 120)) "$soak" --server "127.0.0.1:$port" --server-pid "$turn_pid" \
    --metrics "$metrics" --allocations "$ALLOCATIONS" --seconds "$SECONDS_PER_PHASE" --abusers "$ABUSERS" ||
    status=$?
if ! kill -0 "$turn_pid" 2>/dev/null; then
    echo "FAIL the server exited"
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- server log (tail)"
    tail -n 30 "$tmp/turn.log"
fi
exit "$status"
