#!/usr/bin/env bash
# `peerlink send` to `peerlink recv` through `peerlink serve`, on loopback: a 50 MB random
# file arrives with the same SHA-256 and both exit 0; a second file of the same name does
# not overwrite the first; a sender killed in the middle makes the receiver exit with the
# "interrupted" code (4); bad input (a folder to send, --out naming a file or an unwritable
# folder) fails at once; a file the receiver cannot write is refused with the reason (exit 3
# on both sides); in a room of three, --to picks one receiver and no --to sends to all; with
# nobody in the room send gives up after --wait-receiver (exit 6), and a chat refuses a file
# at once (exit 3); in a namespace whose only address is IPv6, the file goes over IPv6 with
# no --bind.
#
#   tests/e2e/transfer-cli.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
ns=pltx6$$
trap 'kill_all; umount "$tmp/ro" 2>/dev/null || true; umount "$tmp/soon-ro" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT
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

# Input checked before anyone is waited for: each of these exits 1 at once with the reason.
refused_at_once() { # label expected-pattern command...
    local label=$1 pattern=$2
    shift 2
    set +e
    timeout 10 "$@" --server "$url" --room "checks-$$" --bind 127.0.0.1 </dev/null 2>"$tmp/check.err" >/dev/null
    local rc=$?
    set -e
    if [ "$rc" = 1 ] && grep -qE "$pattern" "$tmp/check.err"; then
        ok "$label: exit 1 at once ($(grep -m1 -E "$pattern" "$tmp/check.err"))"
    else
        fail "$label: exit $rc, $(tail -2 "$tmp/check.err")"
    fi
}
refused_at_once "send of a folder" "is a folder" "$peerlink" send "$tmp/in"
refused_at_once "send of a missing file" "No such file" "$peerlink" send "$tmp/missing.bin"
refused_at_once "recv --out naming a file" "is a file" "$peerlink" recv --out "$tmp/data.bin"
mkdir "$tmp/ro"
mount -t tmpfs -o ro,size=1m tmpfs "$tmp/ro"
refused_at_once "recv --out an unwritable folder" "cannot write there" "$peerlink" recv --out "$tmp/ro"
umount "$tmp/ro"
# A missing folder is made, and said so.
set +e
timeout 3 "$peerlink" recv --out "$tmp/made/deeper" --server "$url" --room "made-$$" --bind 127.0.0.1 2>"$tmp/made.err"
set -e
if [ -d "$tmp/made/deeper" ] && grep -q "created the folder" "$tmp/made.err"; then
    ok "recv --out a missing folder makes it and says so"
else
    fail "recv --out a missing folder: $(tail -2 "$tmp/made.err")"
fi

# A receiver that cannot write the file refuses it with the reason; the sender exits 3 with
# it (the folder turns read-only after the receiver checked it).
mkdir "$tmp/soon-ro"
mount -t tmpfs -o size=1m tmpfs "$tmp/soon-ro"
room="t4-$$"
timeout 60 "$peerlink" recv --server "$url" --room "$room" --out "$tmp/soon-ro" --bind 127.0.0.1 2>"$tmp/recv4.err" &
recv_pid=$!
wait_for_line "$tmp/recv4.err" "waiting for someone"
mount -o remount,ro "$tmp/soon-ro"
set +e
timeout 60 "$peerlink" send "$tmp/data.bin" --server "$url" --room "$room" --bind 127.0.0.1 2>"$tmp/send4.err"
send_rc=$?
wait "$recv_pid"
recv_rc=$?
set -e
umount "$tmp/soon-ro" || true
if [ "$send_rc" = 3 ] && [ "$recv_rc" = 3 ] && grep -q "refused: the receiver refused: cannot write the file" "$tmp/send4.err"; then
    ok "an unwritable file is refused: send and recv exit 3 ($(grep -m1 'refused' "$tmp/send4.err"))"
else
    fail "unwritable file: send $send_rc, recv $recv_rc: $(tail -2 "$tmp/send4.err")"
fi

# Rooms of three: --to sends to one named receiver; without it, to every receiver.
room="t5-$$"
mkdir "$tmp/alice" "$tmp/bob"
head -c $((1 << 20)) /dev/urandom >"$tmp/small.bin"
timeout 60 "$peerlink" recv --name alice --server "$url" --room "$room" --out "$tmp/alice" --bind 127.0.0.1 2>"$tmp/alice.err" &
alice_pid=$!
timeout 60 "$peerlink" recv --name bob --server "$url" --room "$room" --out "$tmp/bob" --bind 127.0.0.1 2>"$tmp/bob.err" &
bob_pid=$!
wait_for_line "$tmp/bob.err" "joined room"
set +e
timeout 60 "$peerlink" send "$tmp/small.bin" --to bob --server "$url" --room "$room" --bind 127.0.0.1 2>"$tmp/send5.err"
send_rc=$?
wait "$bob_pid"
bob_rc=$?
set -e
if [ "$send_rc" = 0 ] && [ "$bob_rc" = 0 ] && cmp -s "$tmp/small.bin" "$tmp/bob/small.bin" && [ ! -e "$tmp/alice/small.bin" ]; then
    ok "send --to bob: bob has the file, alice (also in the room) has nothing"
else
    fail "send --to bob: send $send_rc, bob $bob_rc, $(ls "$tmp/alice" "$tmp/bob")"
    tail -3 "$tmp/send5.err"
fi
timeout 60 "$peerlink" recv --name carol --server "$url" --room "$room" --out "$tmp/bob" --bind 127.0.0.1 2>"$tmp/carol.err" &
carol_pid=$!
wait_for_line "$tmp/carol.err" "joined room"
set +e
timeout 60 "$peerlink" send "$tmp/small.bin" --server "$url" --room "$room" --bind 127.0.0.1 2>"$tmp/send6.err"
send_rc=$?
wait "$alice_pid"
alice_rc=$?
wait "$carol_pid"
carol_rc=$?
set -e
if [ "$send_rc" = 0 ] && [ "$alice_rc" = 0 ] && [ "$carol_rc" = 0 ] && cmp -s "$tmp/small.bin" "$tmp/alice/small.bin" &&
    cmp -s "$tmp/small.bin" "$tmp/bob/small (1).bin" && [ "$(grep -c 'confirmed its SHA-256' "$tmp/send6.err")" = 2 ]; then
    ok "send with no --to: both receivers in the room get the file, send exits 0 after both confirmed"
else
    fail "send to every receiver: send $send_rc, alice $alice_rc, carol $carol_rc"
    tail -5 "$tmp/send6.err"
fi

# Nobody to send to: send gives up after --wait-receiver with exit 6 and says why. A room with
# only a chat in it: the chat refuses the file at once (exit 3), no answer time is waited.
set +e
timeout 30 "$peerlink" send "$tmp/small.bin" --wait-receiver 2 --server "$url" --room "nobody-$$" --bind 127.0.0.1 2>"$tmp/send7.err"
send_rc=$?
set -e
if [ "$send_rc" = 6 ] && grep -q "no receiver connected within 2 s" "$tmp/send7.err"; then
    ok "send with nobody in the room gives up after --wait-receiver: exit 6, '$(grep -m1 -o 'no receiver connected.*' "$tmp/send7.err")'"
else
    fail "send with nobody in the room: exit $send_rc"
    tail -3 "$tmp/send7.err"
fi
sleep 30 | timeout 30 "$peerlink" chat --name chatter --server "$url" --room "chat-$$" --bind 127.0.0.1 >/dev/null 2>"$tmp/chatter.err" &
chat_pid=$!
wait_for_line "$tmp/chatter.err" "joined room"
set +e
timeout 25 "$peerlink" send "$tmp/small.bin" --server "$url" --room "chat-$$" --bind 127.0.0.1 2>"$tmp/send8.err"
send_rc=$?
set -e
kill "$chat_pid" 2>/dev/null || true
if [ "$send_rc" = 3 ] && grep -q "does not receive files" "$tmp/send8.err"; then
    ok "send to a room with only a chat: refused at once, exit 3 ($(grep -m1 -o 'refused.*' "$tmp/send8.err"))"
else
    fail "send to a chat: exit $send_rc (want 3, refused at once)"
    tail -3 "$tmp/send8.err"
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
