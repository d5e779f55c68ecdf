#!/usr/bin/env bash
# An SFU room's receiver behind a rate-limited path (issue 18), in network namespaces of this
# test's own:
#
#   A 198.51.100.10 (peerlink serve --room-mode sfu, publishing Chromium) -- R -- B 203.0.113.20 (receiving Chromium)
#
# R runs tests/lab/path-emulator.py, one process per direction, DELAY_MS each way; A->B (the
# receiver's downlink) has no bottleneck until the test limits it to LIMIT_MBIT (a token bucket
# with a QUEUE_MS drop-tail queue) for LIMIT_S seconds, then lifts it again (SIGUSR2 swaps the
# emulator's rate). tests/browser/sfu-ratelimit.mjs drives one Chromium process in A (fake
# camera at 1280x720, simulcast with rids q, h, f: 320, 640, 1280 wide; libwebrtc sends only 2
# layers of 640x480) and one in B (its own process, started in B, microphone only), measures
# from the receiver's getStats and prints: the time to the low layer after the limit, the
# longest stretch without a new decoded frame, the time to the top layer after the lift, and
# the server's layer switches for the receiver. Asserted, the issue's bounds: the low layer
# within 2 s, no stretch longer than 500 ms, the top layer back within 10 s.
#
#   tests/e2e/sfu-ratelimit.sh [path/to/peerlink]
#   LIMIT_MBIT=0.3 LIMIT_S=15 DELAY_MS=20 QUEUE_MS=200 CAMERA=1280x720   KEEP=DIR keep the logs in DIR
#   (DIR/trace0: every packet toward the receiver at the bottleneck, with its RTP payload type
#   and SSRC, delivered or dropped; DIR/serve.log: the server's layer switches)
# Needs root, iptables, NetfilterQueue in tests/interop/.venv, node with tests/browser's
# packages and Chromium (scripts/install-test-deps.sh installs them). Takes 35-60 s.
# Measured 2026-12-06, 4 runs: the low layer after 0.57-0.73 s, the longest stretch without
# a new frame 350-400 ms, the top layer back 0.65-1.22 s after the lift, 16-28 packets lost
# at the bottleneck. Before raw sections dropped copies of received packets, the SFU's
# first step down left half the estimate free, retransmissions were bounded by the
# estimate, history was forgotten at a layer switch and probes were 10 kB at least:
# stretches of 1100-3550 ms and 542-616 packets lost (the low layer froze again and again).
# 2026-12-07, on a machine busy with a build: 3 of 4 runs over 500 ms (500-549), the low
# layer's first key frame (or its repair) dropped at the full bottleneck queue by a burst or
# by a probe for the application-limited sender; since the sender paces at what the path
# delivered for a second after the estimate falls and asks for no such probe within 2 s of
# it, 15 runs under the same load: 200-499 ms (median 350), the low layer after 0.49-0.85 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
PY=${PYTHON:-tests/interop/.venv/bin/python}
LIMIT_MBIT=${LIMIT_MBIT:-0.3}
LIMIT_S=${LIMIT_S:-15}
DELAY_MS=${DELAY_MS:-20}
QUEUE_MS=${QUEUE_MS:-200}
P=plp-rl$$-
TMP=$(mktemp -d)
. scripts/lib/path-lab.sh
SAMPLER=
done_() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    kill -TERM "${EMULATOR_PIDS[@]:-}" 2>/dev/null || true
    path_lab_down
    [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ 2>/dev/null || true
    rm -rf "$TMP"
}
trap done_ EXIT
path_lab_topology

# A->B (queue 0): no bottleneck at first, LIMIT_MBIT after the first SIGUSR2. B->A (queue 1): none.
EMULATOR_PIDS=()
for q in 0 1; do
    alt=()
    [ $q = 0 ] && alt=(--alt-rate-mbit "$LIMIT_MBIT" --trace "$TMP/trace0")
    ip netns exec "$R" "$PY" tests/lab/path-emulator.py --queue $q --delay-ms "$DELAY_MS" --rate-mbit 0 \
        "${alt[@]}" --queue-ms "$QUEUE_MS" --secs 150 --stats "$TMP/emu$q.json" >"$TMP/emu$q.out" 2>&1 &
    EMULATOR_PIDS+=($!)
done
for _ in $(seq 100); do queues_bound && break; sleep 0.1; done
queues_bound || { echo "path emulators did not bind their queues:" >&2; cat "$TMP"/emu*.out >&2; exit 1; }

RUST_LOG=${RUST_LOG:-info,peerlink_server::sfu=debug} ip netns exec "$A" "$peerlink" serve --http $A_IP:0 \
    --listen $A_IP:3478 --room-mode sfu --metrics 127.0.0.1:0 >"$TMP/serve.out" 2>"$TMP/serve.log" &
wait_for_line "$TMP/serve.out" "signaling on ws://" 15
# The server's view (per-layer rates it measures, the receiver's layer), once a second.
stats=$(sed -nE 's/.*SFU rooms and tracks at (http:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
if [ -n "$stats" ]; then
    (for _ in $(seq 150); do
        echo "$(date +%s.%N) $(ip netns exec "$A" curl -s --max-time 1 "$stats.json" || true)"
        sleep 1
    done) >"$TMP/stats.log" 2>/dev/null &
    SAMPLER=$!
fi
ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
echo "# signaling $ws; receiver path: ${DELAY_MS} ms each way, limit ${LIMIT_MBIT} Mbit/s with a ${QUEUE_MS} ms queue for ${LIMIT_S} s"

# Each browser is its own process, started in its namespace (playwright talks to it over a pipe).
for n in A B; do
    ns=${!n}
    printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$ns" >"$TMP/chromium-$n"
    chmod +x "$TMP/chromium-$n"
done
status=0
CHROMIUM_A=$TMP/chromium-A CHROMIUM_B=$TMP/chromium-B EMULATOR_PID=${EMULATOR_PIDS[0]} LIMIT_MBIT=$LIMIT_MBIT \
    LIMIT_S=$LIMIT_S CAMERA=${CAMERA:-1280x720} SERVE_LOG=$TMP/serve.log timeout 130 node tests/browser/sfu-ratelimit.mjs "${app%/}" "$ws" 2>&1 | tee "$TMP/node.out" || status=$?
kill -USR1 "${EMULATOR_PIDS[0]}" 2>/dev/null || true
sleep 0.3
echo "# A->B emulator: $(cat "$TMP/emu0.out" | tr '\n' ' ') $(cat "$TMP/emu0.json" 2>/dev/null || true)"
# The server's bandwidth estimate toward each participant (kbit/s) by second from the limit
# (from its /stats.json): what its layer caps follow.
python3 - "$TMP/stats.log" "$TMP/emu0.out" <<'PYEOF' || true
import json, re, sys
swaps = [float(t) for t in re.findall(r"rate [0-9.]+ Mbit/s at ([0-9.]+)", open(sys.argv[2]).read())]
if swaps:
    est = {}
    for line in open(sys.argv[1]):
        t, _, js = line.partition(" ")
        try:
            rooms = json.loads(js)
        except ValueError:
            continue
        for r in rooms:
            for p in r["participants"]:
                if p["estimate_bps"] is not None:
                    est.setdefault(p["id"][:6], []).append(f"{float(t) - swaps[0]:.0f}:{p['estimate_bps'] // 1000}")
    for who, xs in est.items():
        print(f"# server estimate toward {who} (s from the limit:kbit/s): {' '.join(xs)}")
PYEOF
if [ $status -ne 0 ]; then
    echo "# server log (last 20 lines):"
    tail -20 "$TMP/serve.log"
fi
exit $status
