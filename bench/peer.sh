#!/usr/bin/env bash
# The native peer next to Chromium <-> Chromium and aiortc <-> aiortc, same machine, same run,
# inside a network namespace of this script's own:
#   - set-up time from createOffer to the data channel open on both sides (two peers in one
#     process, descriptions handed across in memory), median of ROUNDS;
#   - file throughput: `peerlink send` -> `peerlink recv` of FILE_MB through `peerlink serve`
#     (the rate `send` reports from channel open to the receiver's SHA-256 ack), next to a
#     reliable ordered data channel between two Chromium peer connections and between two
#     aiortc processes (64 KiB messages, 4 MiB buffered at most).
# Prints every number and our ratios. Asserts nothing about speed.
#
#   bench/peer.sh            # ROUNDS=10 FILE_MB=1024 REF_MB=200 AIORTC_MB=50
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
ROUNDS=${ROUNDS:-10}
FILE_MB=${FILE_MB:-1024}
REF_MB=${REF_MB:-200}
AIORTC_MB=${AIORTC_MB:-50}
cargo build --release -q -p peerlink-cli -p peerlink-bench
python=tests/interop/.venv/bin/python
ns=plpeer$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT
veth_namespace "$ns" 10.99.0.1/24
ip -n "$ns" addr add 10.99.0.2/24 dev v1
# Chromium gathers only on the default route's interface; the route ends inside.
ip -n "$ns" route add default via 10.99.0.2 dev v0
inside() { ip netns exec "$ns" "$@"; }

echo "== set-up time (offer to open channel, median of $ROUNDS)"
ours_setup=$(inside target/release/peer-setup "$ROUNDS")
chromium=$(inside node bench/peer-ref/chromium.mjs "$ROUNDS" $((REF_MB << 20)))
aiortc_setup=$(inside "$python" bench/peer-ref/aiortc_setup.py "$ROUNDS")
echo "peerlink  $ours_setup"
echo "chromium  $chromium"
echo "aiortc    $aiortc_setup"

echo "== throughput"
head -c $((FILE_MB << 20)) /dev/urandom >"$tmp/file.bin"
inside target/release/peerlink serve --http 10.99.0.1:8080 --listen 10.99.0.1:3478 >"$tmp/serve.out" 2>"$tmp/serve.log" &
wait_for_line "$tmp/serve.out" "signaling on ws://"
url=ws://10.99.0.1:8080/ws
inside timeout 300 target/release/peerlink recv --server "$url" --room bench --out "$tmp/in" --bind 10.99.0.1 2>"$tmp/recv.err" &
recv_pid=$!
sleep 1
inside timeout 300 target/release/peerlink send "$tmp/file.bin" --server "$url" --room bench --bind 10.99.0.1 2>"$tmp/send.err"
wait "$recv_pid"
ours_rate=$(sed -nE 's/.* ([0-9.]+) MB\/s\)$/\1/p' "$tmp/send.err" | tail -1)
[ "$(sha256sum <"$tmp/file.bin" | cut -d' ' -f1)" = "$(sha256sum <"$tmp/in/file.bin" | cut -d' ' -f1)" ] ||
    { echo "the received file differs" >&2; exit 1; }
aiortc_rate=$(inside python3 bench/dc_run.py 1 -- "$python" bench/dc-ref/aiortc_peer.py send $((AIORTC_MB << 20)) 65536 \
    -- "$python" bench/dc-ref/aiortc_peer.py recv $((AIORTC_MB << 20)) 65536 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["mb_per_s"], 1))')
python3 - "$ours_setup" "$chromium" "$aiortc_setup" "$ours_rate" "$aiortc_rate" "$FILE_MB" "$REF_MB" "$AIORTC_MB" <<'PY'
import json, sys
ours, chrome, aio = (json.loads(a) for a in sys.argv[1:4])
rate, aio_rate = float(sys.argv[4]), float(sys.argv[5])
mb, ref_mb, aio_mb = sys.argv[6:9]
print()
print(f"{'':<22}{'set-up ms (median)':>20}{'MB/s':>10}")
print(f"{'peerlink':<22}{ours['median_ms']:>20.1f}{rate:>10.1f}   ({mb} MB file, send -> recv)")
print(f"{'chromium <-> chromium':<22}{chrome['median_ms']:>20.1f}{chrome['mb_per_s']:>10.1f}   ({ref_mb} MB channel)")
print(f"{'aiortc <-> aiortc':<22}{aio['median_ms']:>20.1f}{aio_rate:>10.1f}   ({aio_mb} MB channel)")
print(f"\nset-up: peerlink {chrome['median_ms'] / ours['median_ms']:.1f}x faster than chromium, "
      f"{aio['median_ms'] / ours['median_ms']:.1f}x faster than aiortc")
best = max(chrome['mb_per_s'], aio_rate)
print(f"throughput: peerlink {rate / best:.1f}x the fastest of them")
PY
