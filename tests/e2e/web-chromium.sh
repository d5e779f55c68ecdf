#!/usr/bin/env bash
# The browser app end to end: `peerlink serve` serves web/ and signaling; two headless Chromium
# pages join one room, exchange fake camera video, chat both ways and send a 20 MB file
# (SHA-256 checked); then again relay-only through the server's own TURN.
# Screenshots go to $SCREENSHOTS (default tests/browser/screenshots/).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT

# Relays on loopback need --allow-loopback-peers: each page's peer is the other's relay.
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --relay-ip 127.0.0.1 --allow-loopback-peers \
    >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
if ! wait_for_line "$tmp/out" "browser app at http://" 15; then
    cat "$tmp/log" >&2
    exit 1
fi
url=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/out" | head -1)
echo "# $url"

status=0
timeout 180 node tests/browser/web-app.mjs "$url" || status=1
if [ $status -ne 0 ]; then
    echo "# server log (last 40 lines):"
    tail -40 "$tmp/log"
fi
exit $status
