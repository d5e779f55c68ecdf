#!/usr/bin/env bash
# TURN on a multi-homed IPv6 host (RFC 8656 §2: the 5-tuple holds the address the client
# sent to): `peerlink turn` listening on [::] in a network namespace of its own whose
# loopback holds two IPv6 addresses answers a client that asked the second address, and
# relays a peer's data to it, from that address (IPV6_PKTINFO), not from the one the kernel
# would pick for the client's address (the first, its own). The client is a Python socket
# bound to the first address that checks the source of every datagram it gets: an Allocate
# (401, then success with long-term credentials), a CreatePermission, a Data indication.
# The IPv4 case (127.0.0.2 on a wildcard server) is crates/server/tests/turn_wildcard.rs.
#   tests/e2e/turn-ipv6-source.sh [PEERLINK]    (root: it creates a network namespace)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
ns=pl-turn6-$$
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add fd00:6::1/128 dev lo nodad
ip -n "$ns" addr add fd00:6::2/128 dev lo nodad

for threads in 1 2; do
    timeout 60 ip netns exec "$ns" "$peerlink" turn --listen "[::]:3478" --relay-ip ::1 --realm example.test \
        --user test:secret --allow-loopback-peers --relay-threads "$threads" \
        >"$tmp/turn$threads.out" 2>"$tmp/turn$threads.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$tmp/turn$threads.out" "turn listening"
    if ! timeout 30 ip netns exec "$ns" python3 tests/e2e/turn_source_client.py fd00:6::1 fd00:6::2 3478 ::1; then
        echo "FAIL relay threads $threads: see above" >&2
        cat "$tmp/turn$threads.log" >&2
        exit 1
    fi
    echo "ok   relay threads $threads: answers and relayed data leave from the IPv6 address asked"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
echo "turn-ipv6-source: 2 passed, 0 failed"
