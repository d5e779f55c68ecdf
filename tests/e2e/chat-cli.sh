#!/usr/bin/env bash
# `peerlink chat` with `peerlink chat` through `peerlink serve`, everything on loopback: two
# peers meet in a room (the second offers), print each other's lines, and report the
# selected pair. (The browser app against `peerlink chat`: tests/e2e/chat-browser.sh.)
#
#   tests/e2e/chat-cli.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
status=0

"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --allow-loopback-peers >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "signaling on ws://"
url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
room="chat$$"

chat() { # name first-line delay-before-line
    (sleep "$3"; echo "$2"; sleep 8) |
        timeout 30 "$peerlink" chat --server "$url" --room "$room" --name "$1" --bind 127.0.0.1 \
            >"$tmp/$1.out" 2>"$tmp/$1.err"
}
chat alice "hello from alice" 0 &
PIDS+=($!)
sleep 1
chat bob "hello from bob" 1 &
PIDS+=($!)

check() { # what file pattern
    local waited=0
    until grep -qE "$3" "$2" 2>/dev/null; do
        sleep 0.2
        waited=$((waited + 1))
        if [ "$waited" -ge 100 ]; then
            echo "FAIL $1"
            status=1
            return
        fi
    done
    echo "ok   $1: $(grep -m1 -E "$3" "$2")"
}
check "alice got bob's line" "$tmp/alice.out" "hello from bob"
check "bob got alice's line" "$tmp/bob.out" "hello from alice"
# Exactly DESIGN.md's line.
pair='^selected pair: (host|srflx|prflx|relay) -> (host|srflx|prflx|relay)$'
check "alice reports the selected pair" "$tmp/alice.err" "$pair"
check "bob reports the selected pair" "$tmp/bob.err" "$pair"
if [ "$status" != 0 ]; then
    for f in alice.err bob.err serve.log; do echo "--- $f"; tail -20 "$tmp/$f"; done
fi
exit "$status"
