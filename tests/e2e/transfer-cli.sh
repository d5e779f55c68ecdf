#!/usr/bin/env bash
# `peerlink send` to `peerlink recv` through `peerlink serve`, on loopback: a 50 MB random
# file arrives with the same SHA-256 and both exit 0; a second file of the same name does
# not overwrite the first; a sender killed in the middle makes the receiver exit with the
# "interrupted" code (4); in a namespace whose only address is IPv6, the file goes over IPv6
# with no --bind.
#
#   tests/e2e/transfer-cli.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
ns=pltx6$$
trap 'kill_all; ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT
status=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; status=1; }

"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --allow-loopback-peers >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "signaling on ws://"
url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
head -c $((50 << 20)) /dev/urandom >"$tmp/data.bin"
head -c $((400 << 20)) /dev/zero >"$tmp/big.bin"
mkdir "$tmp/in"

transfer() { # room -> sets send_rc, recv_rc
    local room=$1
    timeout 120 "$peerlink" recv --server "$url" --room "$room" --out "$tmp/in" --bind 127.0.0.1 \
        2>"$tmp/recv.err" &
    local recv_pid=$!
    sleep 1
    set +e
    timeout 120 "$peerlink" send "$tmp/data.bin" --server "$url" --room "$room" --bind 127.0.0.1 2>"$tmp/send.err"
    send_rc=$?
    wait "$recv_pid"
    recv_rc=$?
    set -e
}

transfer "t1-$$"
want=$(sha256sum <"$tmp/data.bin" | cut -d' ' -f1)
got=$(sha256sum <"$tmp/in/data.bin" 2>/dev/null | cut -d' ' -f1 || true)
if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && [ "$want" = "$got" ]; then
    ok "50 MB sent and received, same SHA-256, both exit 0 ($(grep -m1 '^selected pair' "$tmp/send.err"))"
else
    fail "first transfer: send $send_rc, recv $recv_rc, sha256 $got vs $want"
    tail -5 "$tmp/send.err" "$tmp/recv.err"
fi

transfer "t2-$$"
got2=$(sha256sum <"$tmp/in/data (1).bin" 2>/dev/null | cut -d' ' -f1 || true)
if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && [ "$got2" = "$want" ] && [ "$(sha256sum <"$tmp/in/data.bin" | cut -d' ' -f1)" = "$want" ]; then
    ok "a second file of the same name arrives as 'data (1).bin'; the first is untouched"
else
    fail "second transfer: send $send_rc, recv $recv_rc, $(ls "$tmp/in")"
fi

# Interrupted: the sender dies at the receiver's first progress line (of 400 MB).
room="t3-$$"
timeout 120 "$peerlink" recv --server "$url" --room "$room" --out "$tmp/in" --bind 127.0.0.1 2>"$tmp/recv3.err" &
recv_pid=$!
sleep 1
"$peerlink" send "$tmp/big.bin" --server "$url" --room "$room" --bind 127.0.0.1 2>"$tmp/send3.err" &
send_pid=$!
for _ in $(seq 1000); do grep -q "^progress: " "$tmp/recv3.err" && break; sleep 0.01; done
kill -9 "$send_pid" 2>/dev/null || true
wait "$send_pid" 2>/dev/null || true
set +e
wait "$recv_pid"
rc=$?
set -e
if [ "$rc" = 4 ]; then
    ok "a sender killed in the middle: recv exits 4 ($(tail -1 "$tmp/recv3.err"))"
else
    fail "interrupted transfer: recv exited $rc"
    tail -5 "$tmp/recv3.err"
fi

# IPv6: the namespace's only address besides loopback is a unique-local IPv6 one. The peers
# gather it by themselves (no --bind); signaling stays on 127.0.0.1.
kill_all
PIDS=()
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add fd00:99::1/64 dev v0 nodad
ip -n "$ns" link set v0 up
ip -n "$ns" link set v1 up
# Started directly (not through a shell function) so that $! is the process itself and
# kill_all reaches it.
ip netns exec "$ns" "$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 >"$tmp/serve6.out" 2>"$tmp/serve6.log" &
PIDS+=($!)
wait_for_line "$tmp/serve6.out" "signaling on ws://"
url6=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve6.out")
mkdir "$tmp/in6"
head -c $((5 << 20)) /dev/urandom >"$tmp/six.bin"
ip netns exec "$ns" timeout 60 "$peerlink" recv --server "$url6" --room "v6-$$" --out "$tmp/in6" 2>"$tmp/recv6.err" &
recv_pid=$!
PIDS+=($recv_pid)
sleep 1
set +e
ip netns exec "$ns" timeout 60 "$peerlink" send "$tmp/six.bin" --server "$url6" --room "v6-$$" 2>"$tmp/send6.err"
send_rc=$?
wait "$recv_pid"
recv_rc=$?
set -e
want6=$(sha256sum <"$tmp/six.bin" | cut -d' ' -f1)
got6=$(sha256sum <"$tmp/in6/six.bin" 2>/dev/null | cut -d' ' -f1 || true)
path6=$(grep -m1 '^peerlink: path' "$tmp/send6.err" || true)
if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && [ "$want6" = "$got6" ] &&
    [[ "$path6" == "peerlink: path [fd00:99::1]:"*" -> [fd00:99::1]:"* ]]; then
    ok "IPv6 only: 5 MB sent and received, same SHA-256 ($path6)"
else
    fail "IPv6 transfer: send $send_rc, recv $recv_rc, sha256 $got6 vs $want6, '$path6'"
    tail -5 "$tmp/send6.err" "$tmp/recv6.err"
fi
exit "$status"
