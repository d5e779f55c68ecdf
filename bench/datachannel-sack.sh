#!/usr/bin/env bash
# Receiving side of issue 21: how promptly a receiver SACKs, ours (`peerlink recv`) side by side
# with libdatachannel (node-datachannel, tests/interop/file-recv.mjs), both fed by the same
# sender we did not write (libdatachannel, tests/interop/file-send.mjs) through the same
# emulated path (scripts/lib/path-lab.sh, same seeded loss), in the same run:
#
#   A 198.51.100.10 (peerlink serve, libdatachannel sender) -- R (path-emulator.py) -- B 203.0.113.20 (receiver)
#
# Method: SCTP runs inside DTLS, so chunks cannot be read on the wire; bench/sack_delay.py
# records every UDP packet on B's interface with the kernel's stamps (not the capture's own
# lateness) and tells DATA (incoming DTLS, >= 1000 bytes) from SACKs (outgoing DTLS, < 300 bytes)
# by size. It prints, per receiver: per-DATA delay (each incoming DATA packet to the next
# outgoing SACK), oldest delay (each SACK: since the earliest DATA that arrived after the
# previous SACK), turnaround (each SACK: since the latest DATA before it), median and p90 over
# all rounds, DATA packets per SACK, and goodput (file bytes over the first to last DATA
# packet); then the tail: p99 and max of oldest and turnaround (the worst round's) and how
# many SACKs waited >= 100 ms by each (a median hides a timer that fires late now and then). RFC 9260 §6.2 allows a SACK every second packet
# and at most 200 ms (we and usrsctp/libdatachannel use less); the delay is what a sender's RTT
# sample and its window growth wait for. Both receivers must report the file's SHA-256 (a
# failed transfer is printed and left out). The 1-minute load average is printed with each run:
# the figures depend on how busy the host is. Nothing about speed is asserted.
#
#   bench/datachannel-sack.sh [path/to/peerlink]
#   PATHS="p1 p2" (p1: 40 ms RTT, 0% loss, 50 Mbit/s; p2: the same with 1% loss; 100 ms queues)
#   RECEIVERS="peerlink libdatachannel" (and/or chromium: headless, tests/browser/file-recv.mjs)
#   ROUNDS=2  MB=16 (p1)  LOSSY_MB=4 (p2: libdatachannel's sender sits near the Reno ceiling)  SEED=N
# About 2-3 minutes with the defaults. Needs root, iperf3, node with tests/interop's packages,
# NetfilterQueue in tests/interop/.venv (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
PATHS=${PATHS:-"p1 p2"}
ROUNDS=${ROUNDS:-2}
RECEIVERS=${RECEIVERS:-"peerlink libdatachannel"}
MB=${MB:-16}
LOSSY_MB=${LOSSY_MB:-4}
PY=${PYTHON:-tests/interop/.venv/bin/python}
P=plp-bs$$-
TMP=$(mktemp -d)
. scripts/lib/path-lab.sh
trap 'path_lab_down; rm -rf "$TMP"' EXIT

if [ -n "${1:-}" ]; then
    peerlink=$(realpath "$1")
else
    cargo build --release -q -p peerlink-cli -p peerlink-bench --bin peerlink 2>/dev/null || cargo build --release -q --bin peerlink
    peerlink=$(realpath "${CARGO_TARGET_DIR:-target}/release/peerlink")
fi
[ -d tests/interop/node_modules/node-datachannel ] ||
    (cd tests/interop && npm install --no-audit --no-fund --silent)
path_lab_up

path_set() {
    case $1 in
        p1) LOSS=0 ;;
        p2) LOSS=0.01 ;;
        *) echo "unknown path $1" >&2; exit 2 ;;
    esac
}
echo "# 50 Mbit/s, 20 ms each way, 100 ms queues; loss seeds $SEED/$((SEED + 1)) (the same for both receivers)"
for path in $PATHS; do
    path_set "$path"
    path_check "$path" "$LOSS"
done
echo "path checks:"
"$PY" tests/lab/path_check.py "$TMP" || echo "# a path check failed: do not trust that path's figures"

ip netns exec "$A" "$peerlink" serve --http $A_IP:0 --listen $A_IP:3478 >"$TMP/serve.out" 2>"$TMP/serve.log" &
wait_for_line "$TMP/serve.out" "signaling on ws://" 15
ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
head -c $((MB << 20)) /dev/urandom >"$TMP/file.bin"

i=0
for path in $PATHS; do
    path_set "$path"
    size=$MB
    [ "$LOSS" = 0 ] || size=$LOSSY_MB
    head -c $((size << 20)) "$TMP/file.bin" >"$TMP/$path.bin"
    for round in $(seq "$ROUNDS"); do
        for receiver in $RECEIVERS; do
            i=$((i + 1))
            c="$TMP/c$i"
            mkdir -p "$c.in"
            emulate "$LOSS" "$c"
            ip netns exec "$B" "$PY" bench/sack_delay.py capture b0 $B_IP "$c.cap" 2>"$c.cap.err" &
            cpid=$!
            wait_for_line "$c.cap.err" capturing 10
            load=$(cut -d' ' -f1 /proc/loadavg)
            room=sack$i-$$
            if [ $receiver = peerlink ]; then
                (timeout 150 ip netns exec "$B" "$peerlink" recv --server "$ws" --room "$room" --out "$c.in" \
                    --bind $B_IP >/dev/null 2>"$c.recv.err") &
            elif [ $receiver = chromium ]; then
                (timeout 170 ip netns exec "$B" node tests/browser/file-recv.mjs "$ws" "$room" 140 \
                    >"$c.recv.json" 2>"$c.recv.err") &
            else
                (timeout 150 ip netns exec "$B" node tests/interop/file-recv.mjs "$ws" "$room" 140000 \
                    >"$c.recv.json" 2>"$c.recv.err") &
            fi
            rpid=$!
            wait_for_line "$c.recv.err" "joined room" 30 || true
            ok=1
            timeout 150 ip netns exec "$A" node tests/interop/file-send.mjs "$ws" "$room" "$TMP/$path.bin" 140000 \
                >"$c.send.json" 2>"$c.send.err" || ok=0
            wait "$rpid" || ok=0
            kill -TERM $cpid
            wait $cpid || true
            unemulate
            if [ $receiver = peerlink ]; then
                grep -q "SHA-256 .* checks" "$c.recv.err" || ok=0
            else
                grep -q '"ok":true' "$c.recv.json" || ok=0
            fi
            rep=$("$PY" bench/sack_delay.py report "$c.cap")
            echo "$path $receiver round $round load $load $(grep -o '[0-9]* dropped' "$c.cap.err") ok=$ok $rep"
            if [ $ok = 1 ] && ! grep -q "\"data\": 0," <<<"$rep"; then
                echo "$path $receiver $size $load $rep" >>"$TMP/results"
            else
                echo "  FAILED: send $(cat "$c.send.json") | recv $(tail -2 "$c.recv.err" | tr '\n' ' ')"
            fi
        done
    done
done

python3 - "$TMP/results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    path, name, mb, load, data = line.split(" ", 4)
    rows.setdefault(path, {}).setdefault(name, []).append((int(mb), float(load), json.loads(data)))
print()
print("DATA -> SACK delay at the receiver (ms; median of the rounds' medians / p90s), libdatachannel sender")
print(f"{'path':<5}{'receiver':<16}{'perData med':>12}{'p90':>8}{'oldest med':>11}{'p90':>8}{'turnaround med':>15}{'p90':>8}{'DATA/SACK':>10}{'MB/s':>7}{'load':>6}{'runs':>5}")
for path, rs in rows.items():
    med = {}
    for name, runs in rs.items():
        m = lambda f: statistics.median(f(r) for _, _, r in runs)
        pd, pd9 = m(lambda r: r["per_data_ms"]["median"]), m(lambda r: r["per_data_ms"]["p90"])
        od, od9 = m(lambda r: r["oldest_ms"]["median"]), m(lambda r: r["oldest_ms"]["p90"])
        ta, ta9 = m(lambda r: r["turnaround_ms"]["median"]), m(lambda r: r["turnaround_ms"]["p90"])
        mbs = statistics.median((mb << 20) / r["data_secs"] / 1e6 for mb, _, r in runs)
        med[name] = ta
        load = statistics.median(l for _, l, _ in runs)
        print(f"{path:<5}{name:<16}{pd:>12.2f}{pd9:>8.2f}{od:>11.2f}{od9:>8.2f}{ta:>15.3f}{ta9:>8.3f}{m(lambda r: r['data_per_sack']):>10.2f}{mbs:>7.2f}{load:>6.2f}{len(runs):>5}")
    if "peerlink" in med and "libdatachannel" in med and med["libdatachannel"]:
        print(f"{path:<5}turnaround, ours / libdatachannel: {med['peerlink'] / med['libdatachannel']:.2f}x")
print("# MB/s: file bytes / first-to-last DATA packet at the receiver; load: 1-minute load average (2 cores)")
print()
print("The tail (ms; p99 and max: the worst round's; >=100: SACKs over all rounds, of all SACKs)")
print(f"{'path':<5}{'receiver':<16}{'oldest p99':>11}{'max':>9}{'>=100':>7}{'turnaround p99':>15}{'max':>9}{'>=100':>7}{'SACKs':>8}")
for path, rs in rows.items():
    for name, runs in rs.items():
        # A round with DATA but no SACK has no percentiles: left out (NaN if none has any).
        w = lambda f: max((v for v in (f(r) for _, _, r in runs) if v is not None), default=float("nan"))
        s = lambda f: sum(f(r) for _, _, r in runs)
        print(f"{path:<5}{name:<16}{w(lambda r: r['oldest_ms']['p99']):>11.2f}{w(lambda r: r['oldest_ms']['max']):>9.2f}"
              f"{s(lambda r: r['oldest_ms']['over_100ms']):>7}{w(lambda r: r['turnaround_ms']['p99']):>15.3f}"
              f"{w(lambda r: r['turnaround_ms']['max']):>9.3f}{s(lambda r: r['turnaround_ms']['over_100ms']):>7}{s(lambda r: r['sacks']):>8}")
PY
