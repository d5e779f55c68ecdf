#!/usr/bin/env bash
# `peerlink echo` against two WebRTC stacks we did not write, through `peerlink serve`, in a
# network namespace of this test's own: headless Chromium (tests/browser/echo-peer.mjs, a page
# written for this test, not the browser app) and aiortc (tests/interop/aiortc_echo.py, given
# only our server's iceServers). Each sends 1,000 messages, text and binary mixed, 1 byte to
# 64 KiB, and checks that every one comes back on its channel, in order, of the same type and
# byte for byte; each stack once as offerer (it joins after echo) and once as answerer (echo
# joins after it and offers). Exits non-zero if any case fails.
#
#   tests/e2e/echo-peers.sh [path/to/peerlink]
#   CASES="chromium:offerer aiortc:answerer ..."   a subset;  COUNT=N   messages per case
#   ECHO=libdatachannel   node-datachannel echoes instead of `peerlink echo` (answerer cases:
#                         it offers), to tell a browser's failure from ours
#   KEEP=DIR              keep every log (echo's, the checker's, the server's) in DIR; with
#                         RUST_LOG=info,peerlink_sctp::wire=trace echo's log has every SCTP packet
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
python=$PWD/tests/interop/.venv/bin/python  # not resolved: a venv is known by its own path
"$python" -c 'import aiortc' || { echo "no aiortc in tests/interop/.venv: run scripts/install-test-deps.sh" >&2; exit 1; }
CASES=${CASES:-"chromium:offerer chromium:answerer aiortc:offerer aiortc:answerer"}
COUNT=${COUNT:-1000}
ns=plecho$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; sleep 0.3; ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$tmp"/. "$KEEP"/; fi; rm -rf "$tmp" || true' EXIT

media_lab "$ns" "$peerlink" "$tmp"

checker() { # stack room: runs in the background, stdout $tmp/ROOM.json, stderr $tmp/ROOM.err
    local stack=$1 room=$2
    if [ "$stack" = chromium ]; then
        timeout 70 ip netns exec "$ns" node tests/browser/echo-peer.mjs "$ws" "$room" "$COUNT" 40 \
            >"$tmp/$room.json" 2>"$tmp/$room.err" &
    else
        timeout 70 ip netns exec "$ns" "$python" tests/interop/aiortc_echo.py "$ws" "$room" "$COUNT" 40 \
            >"$tmp/$room.json" 2>"$tmp/$room.err" &
    fi
    checker_pid=$!
}
echo_peer() { # room: `peerlink echo` in the background (SIGINT after 80 s at the latest)
    local cmd=("$peerlink" echo --server "$ws" --room "$1" --name echo)
    [ "${ECHO:-peerlink}" = libdatachannel ] && cmd=(node tests/interop/ldc-echo.mjs "$ws" "$1")
    timeout -s INT 80 ip netns exec "$ns" "${cmd[@]}" >"$tmp/$1.echo.out" 2>"$tmp/$1.echo.err" &
    echo_pid=$!
}

status=0
for case in $CASES; do
    stack=${case%%:*} role=${case#*:} room="echo-${stack}-${role}-$$"
    start=$(date +%s)
    if [ "$role" = offerer ]; then
        echo_peer "$room"
        wait_for_line "$tmp/$room.echo.err" "joined room" 15 || true
        checker "$stack" "$room"
    else
        checker "$stack" "$room"
        wait_for_line "$tmp/$room.err" "joined as" 30 || true
        echo_peer "$room"
    fi
    rc=0
    wait "$checker_pid" || rc=$?
    kill -INT "$echo_pid" 2>/dev/null || true
    wait "$echo_pid" || true
    result=$(tail -1 "$tmp/$room.json" 2>/dev/null || true)
    summary=$(python3 -c 'import json,sys
try:
    r = json.loads(sys.argv[1])
except Exception:
    print("no result"); sys.exit()
print("%s: %s sent, %s back in order; mismatch %s; pair %s" % (r.get("role"), r.get("sent"), r.get("echoed"), r.get("mismatch"), r.get("pair", "-")))' "$result")
    if [ "$rc" -eq 0 ]; then
        echo "ok   $case: $summary ($(($(date +%s) - start)) s)"
    else
        echo "FAIL $case (exit $rc): $summary"
        echo "     $result" | cut -c1-2000
        sed 's/^/     checker: /' "$tmp/$room.err" | tail -15
        sed 's/^/     echo: /' "$tmp/$room.echo.err" | tail -15
        status=1
    fi
done
exit "$status"
