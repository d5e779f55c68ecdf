#!/usr/bin/env bash
# A call survives a restart of `peerlink serve`: two headless Chromium pages in a call keep
# their peer connection, video and chat while the server is stopped (SIGINT) and started
# again on the same ports, and are back in the room under the same ids; a page that finds
# its room full returns to the join form. The node script runs the server itself (it has to
# stop and start it); see tests/browser/web-restart.mjs for adding a third participant.
#
#   tests/e2e/web-restart.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
http=$(free_port)
turn=$(free_port)
while [ "$turn" = "$http" ]; do turn=$(free_port); done
timeout 180 node --experimental-websocket tests/browser/web-restart.mjs "$peerlink" "$http" "$turn"
