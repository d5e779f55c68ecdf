#!/usr/bin/env bash
# Data channels on long, lossy paths: goodput of one reliable ordered channel through an
# emulated path (scripts/lib/path-lab.sh: tests/lab/path-emulator.py between two network
# namespaces of this script's own), our stack (dc-bench, with each SCTP congestion controller)
# side by side with libdatachannel (node-datachannel, its own two peers), same run, same seeded
# loss, and Chromium -> Chromium (two headless Chromium pages, one in each namespace, one
# `file` channel: tests/browser/file-send.mjs -> file-recv.mjs, signaling through `peerlink
# serve` in A; the receiver checks the SHA-256). Sender in one namespace, receiver in the other. The paths (issue 21), 100 ms queues:
#   p1: 40 ms RTT, 0% loss, 50 Mbit/s   p2: 40 ms, 1%, 50 Mbit/s   p3: 150 ms, 0.5%, 20 Mbit/s
# Each path is checked first with ping and iperf3 (tests/lab/path_check.py; a failed check is
# reported and the path's figures should not be trusted). Prints MB/s (the receiver's first
# byte to last), the fraction of the bottleneck and our ratios to libdatachannel. Asserts
# nothing about speed.
#
#   bench/datachannel-path.sh
#   PATHS="p1 p2 p3"  ROUNDS=1  MB=32 (every stack on p1, BBR on p2)  LOSSY_MB=6 (loss-based stacks
#   on p2/p3)  P3_BBR_MB=12 (BBR on p3: it reaches only ~20% of that link through the emulator)
#   SEED=N  the loss seeds   STACKS="peerlink libdatachannel chromium" (which to run; Chromium
#   gets LOSSY_MB on every path: two browsers on 2 busy cores are slow to start and to send)
# About 6 minutes with the defaults. Needs root, iperf3, node, NetfilterQueue in
# tests/interop/.venv (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
PATHS=${PATHS:-"p1 p2 p3"}
ROUNDS=${ROUNDS:-1}
MB=${MB:-32}
LOSSY_MB=${LOSSY_MB:-6}
P3_BBR_MB=${P3_BBR_MB:-12}
STACKS=${STACKS:-"peerlink libdatachannel chromium"}
MESSAGE=65536
PY=${PYTHON:-tests/interop/.venv/bin/python}
P=plp-bp$$-
TMP=$(mktemp -d)
. scripts/lib/path-lab.sh
trap 'path_lab_down; rm -rf "$TMP"' EXIT

has() { [[ " $STACKS " == *" $1 "* ]]; }
if has peerlink || has libdatachannel; then
    cargo build --release -q -p peerlink-cli -p peerlink-bench --bin dc-bench
    [ -d bench/dc-ref/node_modules/node-datachannel ] ||
        (cd bench/dc-ref && npm install --no-audit --no-fund --silent)
fi
if has chromium; then
    cargo build --release -q -p peerlink-cli -p peerlink-bench --bin peerlink
    [ -d tests/browser/node_modules/playwright-core ] ||
        (cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi
path_lab_up
if has chromium; then
    ip netns exec "$A" "${CARGO_TARGET_DIR:-target}/release/peerlink" serve --http $A_IP:0 --listen $A_IP:3478 \
        >"$TMP/serve.out" 2>"$TMP/serve.log" &
    wait_for_line "$TMP/serve.out" "signaling on ws://" 15
    ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
fi

path_set() { # name -> RATE_MBIT DELAY_MS LOSS
    case $1 in
        p1) RATE_MBIT=50 DELAY_MS=20 LOSS=0 ;;
        p2) RATE_MBIT=50 DELAY_MS=20 LOSS=0.01 ;;
        p3) RATE_MBIT=20 DELAY_MS=75 LOSS=0.005 ;;
        *) echo "unknown path $1" >&2; exit 2 ;;
    esac
}
echo "# loss seeds $SEED/$((SEED + 1)) (the same for every stack on a path)"
for path in $PATHS; do
    path_set "$path"
    path_check "$path" "$LOSS"
done
echo "path checks:"
"$PY" tests/lab/path_check.py "$TMP" || echo "# a path check failed: do not trust that path's figures"

dcb=$(realpath -m "${CARGO_TARGET_DIR:-target}/release/dc-bench")
run() { # path name bytes -- sender... -- receiver...
    local path=$1 name=$2 bytes=$3 round
    shift 4
    local sep
    for ((sep = 1; sep <= $#; sep++)); do [ "${!sep}" = -- ] && break; done
    local snd=("${@:1:sep-1}") rcv=("${@:sep+1}")
    for round in $(seq "$ROUNDS"); do
        emulate "$LOSS" "$TMP/$path.$name.$round"
        if timeout 200 python3 bench/dc_run.py "$bytes" -- ip netns exec "$A" "${snd[@]}" \
            -- ip netns exec "$B" "${rcv[@]}" >"$TMP/out" 2>"$TMP/err"; then
            echo "$path $RATE_MBIT $name $(cat "$TMP/out")" >>"$TMP/results"
            echo "$path $name $(cat "$TMP/out")"
        else
            echo "$path $name round $round FAILED: $(cat "$TMP/out") $(grep -v -E '^ +(at |[0-9]+:)' "$TMP/err" | head -8)"
        fi
        unemulate
    done
}
# chromium PATH BYTES: Chromium -> Chromium through our signaling; the receiver's first chunk
# to last, as dc_run.py prints it for the others.
chromium() {
    local path=$1 bytes=$2 round c room
    for round in $(seq "$ROUNDS"); do
        c="$TMP/$path.chromium.$round" room=bench-$path-$round-$$
        emulate "$LOSS" "$c"
        (timeout 170 ip netns exec "$B" node tests/browser/file-recv.mjs "$ws" "$room" 140 >"$c.recv" 2>"$c.recv.err") &
        local rpid=$!
        if wait_for_line "$c.recv.err" "joined room" 60 &&
            timeout 170 ip netns exec "$A" node tests/browser/file-send.mjs "$ws" "$room" "$bytes" 140 \
                >"$c.send" 2>"$c.send.err" && wait $rpid && grep -q '"ok":true' "$c.recv"; then
            local out
            out=$(python3 -c 'import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(json.dumps({"bytes": r["bytes"], "seconds": r["seconds"], "mb_per_s": round(r["bytes"] / r["seconds"] / 1e6, 3)}))' "$c.recv")
            echo "$path $RATE_MBIT chromium $out" >>"$TMP/results"
            echo "$path chromium $out"
        else
            wait $rpid || true
            echo "$path chromium round $round FAILED: $(tail -c 400 "$c.send" 2>/dev/null) | $(tail -c 400 "$c.recv" 2>/dev/null) $(tail -3 "$c.recv.err" "$c.send.err" 2>/dev/null)"
        fi
        unemulate
    done
}
for path in $PATHS; do
    path_set "$path"
    if has chromium; then chromium "$path" $((LOSSY_MB << 20)); fi
    has peerlink || has libdatachannel || continue
    big=$((MB << 20)) small=$((MB << 20))
    [ "$LOSS" != 0 ] && small=$((LOSSY_MB << 20))
    [ "$path" = p3 ] && big=$((P3_BBR_MB << 20))
    for cc in bbr rfc9260; do
        has peerlink || continue
        bytes=$small
        [ $cc = bbr ] && bytes=$big
        run "$path" "peerlink-$cc" $bytes -- $dcb send --bind $A_IP:0 --bytes $bytes --message $MESSAGE --congestion-control $cc \
            -- $dcb recv --bind $B_IP:0 --bytes $bytes --message $MESSAGE --congestion-control $cc
    done
    has libdatachannel || continue
    run "$path" libdatachannel $small -- node bench/dc-ref/ldc-peer.mjs send $small $MESSAGE \
        -- node bench/dc-ref/ldc-peer.mjs recv $small $MESSAGE
done

python3 - "$TMP/results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    path, rate, name, data = line.split(" ", 3)
    rows.setdefault((path, float(rate)), {}).setdefault(name, []).append(json.loads(data))
print()
print(f"{'path':<5}{'stack':<20}{'MB':>6}{'MB/s (median)':>15}{'of link':>9}{'runs':>6}")
for (path, rate), stacks in rows.items():
    med = {}
    for name, rs in stacks.items():
        med[name] = statistics.median(r["mb_per_s"] for r in rs)
        print(f"{path:<5}{name:<20}{rs[0]['bytes'] / 1e6:>6.1f}{med[name]:>15.2f}{100 * med[name] * 8 / rate:>8.1f}%{len(rs):>6}")
    if "libdatachannel" in med:
        for name in (k for k in med if k.startswith("peerlink")):
            print(f"{path:<5}{name} / libdatachannel: {med[name] / med['libdatachannel']:.2f}x")
print("# of link: goodput x 8 / bottleneck rate (IP bytes; the header limit is ~92%)")
PY
