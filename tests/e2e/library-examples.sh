#!/usr/bin/env bash
# The `peerlink` crate's examples (crates/peerlink/examples), run as a user would:
#   own_signaling and sans_io: two peers in one process, a message each way;
#   echo and chat through `peerlink serve`: a line the chat example sends comes back from the
#   echo example, and from `peerlink chat` to the echo example and back, in both join orders.
#   tests/e2e/library-examples.sh [path/to/peerlink] [path/to/examples]
set -u
peerlink=${1:-target/release/peerlink}
examples=${2:-target/release/examples}
tmp=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
status=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; status=1; }

for example in own_signaling sans_io; do
    if timeout 30 "$examples/$example" >"$tmp/$example.out" 2>&1; then
        ok "$example: $(tr '\n' ' ' <"$tmp/$example.out")"
    else
        fail "$example: $(cat "$tmp/$example.out")"
    fi
done

"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --allow-loopback-peers >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "signaling on ws://" "$tmp/serve.out" && break; sleep 0.1; done
url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")

# order: who joins first; client: what talks to the echo example.
run_case() { # label first client
    local label=$1 first=$2 client=$3 room="ex$$$1"
    local echo_cmd=("$examples/echo" "$url" "$room" echo)
    local client_cmd
    if [ "$client" = chat-example ]; then
        client_cmd=("$examples/chat" "$url" "$room" ann)
    else
        client_cmd=("$peerlink" chat --server "$url" --room "$room" --name ann)
    fi
    if [ "$first" = echo ]; then
        timeout 20 "${echo_cmd[@]}" 2>"$tmp/$label-echo.err" &
        PIDS+=($!)
        sleep 1
    fi
    (sleep 4; echo "line one from $label"; echo "line two"; sleep 4) |
        timeout 15 "${client_cmd[@]}" >"$tmp/$label.out" 2>"$tmp/$label.err" &
    local client_pid=$!
    if [ "$first" != echo ]; then
        sleep 1
        timeout 20 "${echo_cmd[@]}" 2>"$tmp/$label-echo.err" &
        PIDS+=($!)
    fi
    wait "$client_pid"
    if grep -q "line one from $label" "$tmp/$label.out" && grep -q "line two" "$tmp/$label.out"; then
        ok "$label: both lines came back, in order: $(tr '\n' '|' <"$tmp/$label.out")"
    else
        fail "$label: got '$(cat "$tmp/$label.out")'; stderr: $(tail -3 "$tmp/$label.err")"
    fi
}
run_case chat-example-joins-second echo chat-example
run_case chat-example-joins-first chat-example chat-example
run_case cli-chat-joins-second echo cli-chat
run_case cli-chat-joins-first cli-chat cli-chat
exit "$status"
