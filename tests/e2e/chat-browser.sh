#!/usr/bin/env bash
# The browser app (headless Chromium) against `peerlink chat`, `recv` and `send`, all through
# `peerlink serve`, inside a network namespace of this test's own (Chromium gathers on the
# default route's interface, a veth whose both ends stay in the namespace): a chat line each
# way, then 50 MB each way with the SHA-256 checked, directly and with the page relay-only.
#
#   tests/e2e/chat-browser.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
ns=plchat$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT
veth_namespace "$ns" 203.0.113.10/24
ip -n "$ns" addr add 203.0.113.1/24 dev v1 2>/dev/null || true
ip -n "$ns" route add default via 203.0.113.1 dev v0
# STUN/TURN on every address of the namespace (the page and the native peer reach it as
# 127.0.0.1), relays on the veth address.
ip netns exec "$ns" "$peerlink" serve --http 127.0.0.1:0 --listen 0.0.0.0:3478 --relay-ip 203.0.113.10 --allow-loopback-peers \
    >"$tmp/serve.out" 2>"$tmp/serve.log" &
wait_for_line "$tmp/serve.out" "signaling on ws://"
ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
status=0
ip netns exec "$ns" timeout 120 node tests/browser/chat-cli.mjs "$app" "room$$" "$peerlink" "$ws" 203.0.113.10 || status=1
ip netns exec "$ns" timeout 200 node tests/browser/transfer-cli.mjs "$app" "files$$" "$peerlink" "$ws" 203.0.113.10 || status=1
RELAY=1 ip netns exec "$ns" timeout 200 node tests/browser/transfer-cli.mjs "$app" "relay$$" "$peerlink" "$ws" 203.0.113.10 || status=1
exit "$status"
