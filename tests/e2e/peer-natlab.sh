#!/usr/bin/env bash
# Two native peers behind two Linux NATs (tests/lab/nat-topo.sh): `peerlink serve` on the
# public side (signaling, STUN, TURN), `peerlink recv` behind one NAT and `peerlink send`
# behind the other; a 5 MB file must arrive with the same SHA-256. Port-preserving NATs give a
# srflx -> srflx pair; a symmetric NAT on one side, a pair through the relay.
#
#   tests/e2e/peer-natlab.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
prefix="pp$$-"
tmp=$(mktemp -d)
serve_pid=""
cleanup() {
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    tests/lab/nat-topo.sh down "$prefix"
    rm -rf "$tmp"
}
trap cleanup EXIT
head -c $((5 << 20)) /dev/urandom >"$tmp/data.bin"
want=$(sha256sum <"$tmp/data.bin" | cut -d' ' -f1)
failed=0

run_case() { # NAT1_MODE NAT2_MODE EXPECT(srflx|relay)
    NAT1_MODE=$1 NAT2_MODE=$2 tests/lab/nat-topo.sh up "$prefix"
    ip netns exec "${prefix}pub" "$peerlink" serve --http 203.0.113.100:8080 --listen 203.0.113.100:3478 \
        >"$tmp/serve.out" 2>"$tmp/serve.log" &
    serve_pid=$!
    wait_for_line "$tmp/serve.out" "signaling on ws://"
    local url="ws://203.0.113.100:8080/ws" room="nat$$-$1-$2"
    rm -rf "$tmp/in"
    ip netns exec "${prefix}c1" timeout 60 "$peerlink" recv --server "$url" --room "$room" --out "$tmp/in" \
        2>"$tmp/recv.err" &
    local recv_pid=$!
    sleep 1
    set +e
    ip netns exec "${prefix}c2" timeout 60 "$peerlink" send "$tmp/data.bin" --server "$url" --room "$room" 2>"$tmp/send.err"
    local send_rc=$?
    wait "$recv_pid"
    local recv_rc=$?
    set -e
    local got pair_r pair_s
    got=$(sha256sum <"$tmp/in/data.bin" 2>/dev/null | cut -d' ' -f1 || true)
    pair_r=$(grep -m1 '^selected pair:' "$tmp/recv.err" | cut -d' ' -f3-5 || true)
    pair_s=$(grep -m1 '^selected pair:' "$tmp/send.err" | cut -d' ' -f3-5 || true)
    local path_ok=0
    if [ "$3" = srflx ]; then
        [ "$pair_r" = "srflx -> srflx" ] && [ "$pair_s" = "srflx -> srflx" ] && path_ok=1
    else
        [[ "$pair_r $pair_s" == *relay* ]] && path_ok=1
    fi
    if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && [ "$got" = "$want" ] && [ "$path_ok" = 1 ]; then
        echo "ok   NATs $1/$2: 5 MB through, same SHA-256 (recv: $pair_r; send: $pair_s)"
    else
        echo "FAIL NATs $1/$2: send $send_rc recv $recv_rc sha ${got:-none} (recv: $pair_r; send: $pair_s; expected $3)"
        tail -5 "$tmp/recv.err" "$tmp/send.err"
        failed=1
    fi
    kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
}

run_case pc pc srflx
run_case pc sym relay
if [ "$failed" = 0 ]; then echo "peer NAT lab: all cases passed"; else echo "peer NAT lab: FAILED"; exit 1; fi
