#!/usr/bin/env bash
# An SFU room in `peerlink serve --room-mode sfu` with headless Chromium pages written from
# the protocol alone (tests/browser/sfu-room.mjs): 4 pages each decode the other 3 videos and
# receive their audio over one peer connection to the server; one leaves, a fifth joins.
# In a network namespace of this test's own.
# SCENARIO=lastn: `--last-n 2 --thumbnails-above 1` instead, with tests/browser/sfu-lastn.mjs
# (whose videos each page gets, and in which layer, as the speaker changes).
#
#   tests/e2e/sfu-chromium.sh [path/to/peerlink]
#   KEEP=DIR    keep the server log in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
ns=plsfu$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; sleep 0.3; ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; rm -rf "$tmp" || true' EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

export RUST_LOG=${RUST_LOG:-info,peerlink_server::sfu=debug}
case ${SCENARIO:-room} in
room) page=sfu-room.mjs extra= ;;
lastn) page=sfu-lastn.mjs extra="--last-n 2 --thumbnails-above 1" ;;
*) echo "unknown SCENARIO ${SCENARIO}" >&2; exit 2 ;;
esac
SERVE_ARGS="--room-mode sfu --metrics 127.0.0.1:0 $extra" media_lab "$ns" "$peerlink" "$tmp"
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
stats=$(sed -nE 's/.*SFU rooms and tracks at (http:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
[ -n "$stats" ] || { echo "FAIL serve did not announce its /stats page"; exit 1; }
export STATS_URL=$stats
status=0
timeout 170 ip netns exec "$ns" node "tests/browser/$page" "${app%/}" "$ws" || status=$?
if [ $status -ne 0 ]; then
    echo "# server log (last 30 lines):"
    tail -30 "$tmp/serve.log"
fi
exit $status
