#!/usr/bin/env bash
# Headless Chromium (a WebRTC stack we did not write) relays a data channel through
# `peerlink turn`: two pages, iceTransportPolicy "relay", only our TURN server, TURN REST
# credentials; over UDP and over TCP to the server. The selected pair must be relay/relay.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Relays on loopback need --allow-loopback-peers: each page's peer is the other's relay.
"$peerlink" turn --listen 127.0.0.1:0 --relay-ip 127.0.0.1 --realm example.test --auth-secret "$secret" \
    --allow-loopback-peers >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
wait_for_line "$tmp/out" "turn listening on"
port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/out")

status=0
for transport in udp tcp; do
    echo "# chromium relay-only over $transport"
    timeout 120 node tests/browser/turn-relay.mjs "$port" "$secret" "$transport" || status=1
done
exit $status
