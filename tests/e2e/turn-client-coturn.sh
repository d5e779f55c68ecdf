#!/usr/bin/env bash
# Our TURN client (peerlink_turn::TurnClient, driven by the turn_probe example) against
# coturn's turnserver, a server we did not write: allocate, channel and Send/Data
# indication traffic echoed by two local peers, and a wrong password refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
probe=${1:-target/release/examples/turn_probe}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
port=$(free_port)
turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$port" --lt-cred-mech \
    --user=test:secret --realm=example.test --no-tls --no-dtls --no-cli --allow-loopback-peers \
    --log-file="$tmp/coturn.log" --simple-log --pidfile="$tmp/coturn.pid" >/dev/null 2>&1 &
PIDS+=($!)
wait_for_line "$tmp/coturn.log" "Total General servers|turn server id=0 created"
sleep 0.3

status=0
RUST_BACKTRACE=0 timeout 60 "$probe" "127.0.0.1:$port" test secret 100 || status=1
if RUST_BACKTRACE=0 timeout 30 "$probe" "127.0.0.1:$port" test wrong 5 >"$tmp/wrong.log" 2>&1; then
    echo "FAIL coturn accepted a wrong password?"
    status=1
elif grep -q "refused with 401" "$tmp/wrong.log"; then
    echo "ok   wrong password: allocation refused with 401"
else
    echo "FAIL wrong password: unexpected outcome"
    cat "$tmp/wrong.log"
    status=1
fi
exit $status
