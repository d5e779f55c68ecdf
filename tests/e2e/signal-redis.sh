#!/usr/bin/env bash
# Two `peerlink serve` processes share rooms through a real redis-server (Debian's, started
# here on a free loopback port): peers connected to different processes see each other, signal
# each other both ways, hear each other leave, and a killed process's peers leave the room;
# two headless Chromium pages, one on each process, hold a call in one room.
#
#   tests/e2e/signal-redis.sh [path/to/peerlink] [path/to/signal_probe]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
probe=${2:-target/release/examples/signal_probe}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
PIDS+=($!)
wait_for_line "$tmp/redis.log" "Ready to accept connections" 10
redis="redis://127.0.0.1:$port/"

# Not inside $(...): the server pids must reach PIDS in this shell.
node_url() {
    wait_for_line "$tmp/$1.out" "signaling on ws://" 10
    sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/$1.out"
}
for node in a b; do
    "$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --relay-ip 127.0.0.1 --redis "$redis" \
        >"$tmp/$node.out" 2>"$tmp/$node.log" &
    PIDS+=($!)
done
pid_b=${PIDS[2]}
url_a=$(node_url a)
url_b=$(node_url b)
echo "# node a: $url_a, node b: $url_b, redis on port $port"

status=0
check() { # description, command...
    local what=$1
    shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; status=1; fi
}

# Four peers, two per node, one room: each must see the three others and hear from each.
# a1 then stays until the three others have left (b1 and b2 leave through node b).
room=shared-$RANDOM
"$probe" "$url_a" "$room" a1 3 3 >"$tmp/a1" &
p_a1=$!
"$probe" "$url_a" "$room" a2 3 >"$tmp/a2" &
p_a2=$!
"$probe" "$url_b" "$room" b1 3 >"$tmp/b1" &
p_b1=$!
"$probe" "$url_b" "$room" b2 3 >"$tmp/b2" &
p_b2=$!
for p in a2 b1 b2; do
    pid_var=p_$p
    check "$p sees 3 peers across both nodes and gets a signal from each" wait "${!pid_var}"
done
check "a1 sees 3 peers, gets their signals, then hears all three leave" wait "$p_a1"
[ $status -eq 0 ] || cat "$tmp"/a1 "$tmp"/a2 "$tmp"/b1 "$tmp"/b2 "$tmp"/a.log "$tmp"/b.log | sed 's/^/# /'

# A room on one node only stays there: another room's peer on node b is not seen.
room2=apart-$RANDOM
"$probe" "$url_b" "$room2" lonely 1 >"$tmp/lonely" &
p_lonely=$!
"$probe" "$url_a" "$room" other 1 >"$tmp/other" &
p_other=$!
sleep 2
check "a peer alone in its room sees nobody from another room" kill -0 "$p_lonely"
kill "$p_lonely" "$p_other" 2>/dev/null || true
wait "$p_lonely" 2>/dev/null || true
wait "$p_other" 2>/dev/null || true

# Browsers on different nodes: alice's page on node a, bob's on node b, one room: the call,
# chat and a file go through (signaling crosses Redis; media and data go peer to peer).
app_a=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/a.out")
app_b=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/b.out")
if ROUNDS=direct SCREENSHOTS="$tmp/shots" timeout 120 node tests/browser/web-app.mjs "$app_a" "$app_b" >"$tmp/web" 2>&1; then
    echo "ok   two Chromium pages on different nodes call, chat and send a file ($(tail -1 "$tmp/web"))"
else
    echo "FAIL two Chromium pages on different nodes"
    sed 's/^/# /' "$tmp/web"
    status=1
fi

# Node b dies without a word (SIGKILL): its peer leaves node a's room after the node timeout.
room3=crash-$RANDOM
"$probe" "$url_a" "$room3" survivor 1 1 >"$tmp/survivor" &
p_survivor=$!
"$probe" "$url_b" "$room3" doomed 1 1 >"$tmp/doomed" &
wait_for_line "$tmp/survivor" "saw 1 peers" 15
kill -9 "$pid_b"
check "when node b is killed, its peer leaves node a's room" wait "$p_survivor"

exit $status
