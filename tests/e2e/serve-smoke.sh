#!/usr/bin/env bash
# `peerlink serve` as the README starts it (here on a free loopback port instead of 3478):
# coturn's turnutils_stunclient gets its reflexive address, and turnutils_uclient relays
# through it with TURN REST credentials from the secret given on the command line.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
status=0

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)
"$peerlink" serve --listen 127.0.0.1:0 --auth-secret smoke-secret --allow-loopback-peers \
    --max-allocations-per-user 50 >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
wait_for_line "$tmp/out" "turn listening on"
port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/out")

if timeout 10 turnutils_stunclient -p "$port" -L 127.0.0.1 127.0.0.1 2>&1 | grep -q "UDP reflexive addr: 127.0.0.1:"; then
    echo "ok   serve answers STUN Binding"
else
    echo "FAIL serve did not answer STUN Binding"
    status=1
fi
timeout 60 turnutils_uclient -u smoke -W smoke-secret -p "$port" -e 127.0.0.1 -r "$peer_port" -m 2 -n 50 \
    127.0.0.1 >"$tmp/uclient.log" 2>&1 || true
if grep -aq "tot_send_msgs=100, tot_recv_msgs=100" "$tmp/uclient.log" && grep -aq "Total lost packets 0 " "$tmp/uclient.log"; then
    echo "ok   serve relays TURN with REST credentials (100 of 100 echoed)"
else
    echo "FAIL serve did not relay"
    grep -aE "tot_send_msgs|error" "$tmp/uclient.log" | tail -3
    status=1
fi
# Shuts down cleanly on SIGTERM.
kill -TERM "${PIDS[-1]}"
for _ in $(seq 50); do kill -0 "${PIDS[-1]}" 2>/dev/null || break; sleep 0.1; done
if kill -0 "${PIDS[-1]}" 2>/dev/null; then
    echo "FAIL serve still running 5 s after SIGTERM"
    status=1
else
    echo "ok   serve stops on SIGTERM"
fi
exit $status
