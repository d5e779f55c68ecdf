#!/usr/bin/env bash
# coturn's turnutils_stunclient (a client we did not write) against `peerlink stun`: the
# reflexive address it decodes must be the address the client really sent from.
#
# The client binds a chosen loopback address (127.0.0.77), so a wrong IP shows; its port
# is random, so the server's trace log (which records each datagram's source as the kernel
# reported it) gives the port to compare with.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
failures=0

RUST_LOG=peerlink_server=trace "$peerlink" stun --listen "[::]:0" >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
wait_for_line "$tmp/out" "stun listening on"
port=$(sed -nE 's/.*stun listening on \[::\]:([0-9]+).*/\1/p' "$tmp/out")

check() {
    local label=$1 server=$2 expect_ip=$3
    shift 3
    local output reflexive ip rport
    output=$(timeout 10 turnutils_stunclient -p "$port" "$@" "$server" 2>&1) || true
    reflexive=$(sed -nE 's/.*UDP reflexive addr: (.*)$/\1/p' <<<"$output" | head -1)
    if [ -z "$reflexive" ]; then
        echo "FAIL $label: no reflexive address; stunclient said: $output"
        failures=$((failures + 1))
        return
    fi
    ip=${reflexive%:*}
    rport=${reflexive##*:}
    # The server logs `source=IP:PORT` (IPv6 in brackets) for every datagram it answered.
    if [ "$ip" != "$expect_ip" ]; then
        echo "FAIL $label: reflexive IP $ip, expected $expect_ip"
        failures=$((failures + 1))
    elif ! grep -qE "source=\[?${expect_ip//./\\.}\]?:${rport} outcome=Answered" "$tmp/log"; then
        echo "FAIL $label: reflexive port $rport is not a port the server saw:"
        grep -E "source=" "$tmp/log" | tail -3
        failures=$((failures + 1))
    else
        echo "ok   $label: turnutils_stunclient got $reflexive"
    fi
}

check "ipv4 from 127.0.0.77" 127.0.0.1 127.0.0.77 -L 127.0.0.77
check "ipv4 from 127.0.0.1" 127.0.0.1 127.0.0.1
check "ipv6 from ::1" ::1 ::1

passed=$((3 - failures))
echo "stun-stunclient: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
