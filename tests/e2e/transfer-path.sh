#!/usr/bin/env bash
# `peerlink send` -> `peerlink recv` across an emulated long, lossy path, with each SCTP
# congestion controller, in network namespaces of this test's own:
#
#   A 198.51.100.10 (peerlink serve, peerlink send) -- R (router) -- B 203.0.113.20 (recv, iperf3 -s)
#
# R runs tests/lab/path-emulator.py, one process per direction (scripts/lib/path-lab.sh):
# seeded random loss, a token-bucket bottleneck with a drop-tail queue, a fixed delay. The
# paths (issue 21):
#   p1: 40 ms RTT, 0% loss, 50 Mbit/s, 100 ms queue      p2: the same with 1% loss (each way)
#   p3: 150 ms RTT, 0.5% loss (each way), 20 Mbit/s, 100 ms queue (BBR only: a short file)
#
# Each path is checked before its figures are trusted, and the checks are asserted: ping's RTT
# within 5% of the set RTT; iperf3 UDP driven past the bottleneck delivers the set rate within 5%
# (IP bytes); iperf3 UDP at half the rate loses only packets the emulator dropped (nothing else
# on the way drops) and, its queue drops aside, a number within the exact binomial interval a
# correct path leaves with probability 1e-4 (~16,700 packets on a lossy path, so P3's run takes
# 20 s; 5% of 0.5% would take ~700,000; tests/lab/path_check.py). Then, for each case, one file
# crosses the path from `peerlink send` in A to a receiver in B (peerlink recv, libdatachannel or
# Chromium): both sides must report success and the received file must have the sender's SHA-256.
# One case turns it round: libdatachannel (tests/interop/file-send.mjs) sends to `peerlink recv`
# (issue 21: receiving from a stack we did not write through the same path).
# Goodput (file bytes over the receiver's time from the file's header, or its first chunk, to
# its last byte) is printed as a fraction of the bottleneck; nothing about speed is asserted.
#
#   tests/e2e/transfer-path.sh [path/to/peerlink]
#   CASES="p1:rfc9260:32 p1:default:32 p2:rfc9260:4 p2:default:32 p2:default:16:libdatachannel
#          p2:default:16:chromium p3:default:8 p1:default:16:peerlink:libdatachannel"
#   path:controller:MiB[:receiver[:sender]] (the default);
#   controller `default` passes no --congestion-control (the default, BBR); receiver `peerlink`
#   (recv, the default), `libdatachannel` (node-datachannel, tests/interop/file-recv.mjs) or
#   `chromium` (headless, a page of its own: tests/browser/file-recv.mjs): stacks we did not write
#   receive from `peerlink send` through the same path; sender `peerlink` (send, the default) or
#   `libdatachannel` (tests/interop/file-send.mjs; the controller is then only the receiver's)
#   RATE_MBIT=50 DELAY_MS=20 QUEUE_MS=100 P2_LOSS=0.01   p1 and p2
#   P3_RATE_MBIT=20 P3_DELAY_MS=75 P3_LOSS=0.005   p3   SEED=N  the loss seeds
# The RFC 9260 controller on p2 gets a small file: it sits near the Reno ceiling (~0.3 MB/s).
# If the rate check fails because the machine is too busy for the emulator, lower RATE_MBIT
# rather than widening the band. Needs root, iperf3, iptables, ping, NetfilterQueue in
# tests/interop/.venv, node with tests/interop's and tests/browser's packages, and Chromium
# (scripts/install-test-deps.sh installs them). Takes about 2-3 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
PY=${PYTHON:-tests/interop/.venv/bin/python}
CASES=${CASES:-"p1:rfc9260:32 p1:default:32 p2:rfc9260:4 p2:default:32 p2:default:16:libdatachannel p2:default:16:chromium p3:default:8 p1:default:16:peerlink:libdatachannel"}
P2_LOSS=${P2_LOSS:-0.01}
P3_LOSS=${P3_LOSS:-0.005}
P3_RATE_MBIT=${P3_RATE_MBIT:-20}
P3_DELAY_MS=${P3_DELAY_MS:-75}
P=plp-tp$$-
TMP=$(mktemp -d)
. scripts/lib/path-lab.sh
trap 'path_lab_down; rm -rf "$TMP"' EXIT
path_lab_up
P12_RATE_MBIT=$RATE_MBIT P12_DELAY_MS=$DELAY_MS
path_loss() { case $1 in p2) echo "$P2_LOSS" ;; p3) echo "$P3_LOSS" ;; *) echo 0 ;; esac; }
path_set() { # the rate and delay scripts/lib/path-lab.sh emulates
    case $1 in
        p3) RATE_MBIT=$P3_RATE_MBIT DELAY_MS=$P3_DELAY_MS ;;
        *) RATE_MBIT=$P12_RATE_MBIT DELAY_MS=$P12_DELAY_MS ;;
    esac
}
stamp() { # prefixes each line of standard input with the time it was read
    python3 -u -c 'import sys, time
for line in sys.stdin: print(f"{time.time():.3f} {line}", end="", flush=True)'
}

ip netns exec "$A" "$peerlink" serve --http $A_IP:0 --listen $A_IP:3478 >"$TMP/serve.out" 2>"$TMP/serve.log" &
wait_for_line "$TMP/serve.out" "signaling on ws://" 15
ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$TMP/serve.out" | head -1)
echo "# p1/p2 $RATE_MBIT Mbit/s, ${DELAY_MS} ms each way; p3 $P3_RATE_MBIT Mbit/s, ${P3_DELAY_MS} ms each way; ${QUEUE_MS} ms queues; loss each way p2 $P2_LOSS, p3 $P3_LOSS; seeds $SEED/$((SEED + 1))"

for path in $(printf '%s\n' $CASES | cut -d: -f1 | sort -u); do
    path_set "$path"
    path_check "$path" "$(path_loss "$path")"
done

head -c $((64 << 20)) /dev/urandom >"$TMP/file64.bin"
i=0
for case in $CASES; do
    IFS=: read -r path cc mib receiver sender <<<"$case"
    receiver=${receiver:-peerlink} sender=${sender:-peerlink}
    i=$((i + 1))
    c="$TMP/c$i"
    mkdir -p "$c.in"
    head -c $((mib << 20)) "$TMP/file64.bin" >"$c.bin"
    path_set "$path"
    emulate "$(path_loss "$path")" "$c"
    room=path$i-$$
    rc_s=0 rc_r=0
    ccflag=()
    [ "$cc" = default ] || ccflag=(--congestion-control "$cc")
    if [ "$receiver" = libdatachannel ]; then
        (timeout 150 ip netns exec "$B" node tests/interop/file-recv.mjs "$ws" "$room" 140000 \
            >"$c.ldc.json" 2>"$c.recv.err") &
    elif [ "$receiver" = chromium ]; then
        (timeout 170 ip netns exec "$B" node tests/browser/file-recv.mjs "$ws" "$room" 140 \
            >"$c.ldc.json" 2>"$c.recv.err") &
    else
        (timeout 150 ip netns exec "$B" "$peerlink" recv --server "$ws" --room "$room" --out "$c.in" \
            --bind $B_IP "${ccflag[@]}" 2>&1 >/dev/null | stamp >"$c.recv.err") &
    fi
    rpid=$!
    wait_for_line "$c.recv.err" "joined room" 30 || true
    if [ "$sender" = libdatachannel ]; then
        timeout 150 ip netns exec "$A" node tests/interop/file-send.mjs "$ws" "$room" "$c.bin" 140000 \
            >"$c.send.json" 2>"$c.send.err" || rc_s=$?
        [ $rc_s != 0 ] || grep -q '"ok":true' "$c.send.json" || rc_s=1
        cat "$c.send.json" >>"$c.send.err"
    else
        timeout 150 ip netns exec "$A" "$peerlink" send "$c.bin" --server "$ws" --room "$room" \
            --bind $A_IP "${ccflag[@]}" >/dev/null 2>"$c.send.err" || rc_s=$?
    fi
    wait "$rpid" || true
    unemulate
    want=$(sha256sum <"$c.bin" | cut -d' ' -f1)
    if [ "$receiver" != peerlink ]; then
        grep -q '"ok":true' "$c.ldc.json" || rc_r=1
        got=$(sed -nE 's/.*"sha256":"([0-9a-f]+)".*/\1/p' "$c.ldc.json")
    else
        grep -q "SHA-256 .* checks" "$c.recv.err" || rc_r=1
        got=$(sha256sum <"$c.in/$(basename "$c.bin")" 2>/dev/null | cut -d' ' -f1 || true)
    fi
    echo "$i $path $cc $mib $sender $receiver $rc_s $rc_r $([ "$want" = "$got" ] && echo same || echo differs) $RATE_MBIT" >>"$TMP/cases"
done

status=0
echo "path checks (asserted):"
"$PY" tests/lab/path_check.py "$TMP" || status=1
echo
echo "sender -> receiver through the path (asserted: both exit 0, same SHA-256; goodput printed only):"
python3 - "$TMP" <<'EOF' || status=1
import json, sys
sys.path.insert(0, "tests/lab")
from path_check import load, tail, text
tmp = sys.argv[1]
failed = 0
cols = ["case", "path", "controller", "sender", "receiver", "MiB", "secs", "MB/s", "ofLink", "lossDrops", "queueDrops", "maxWaitMs", "result"]
rows = []
goodput = {}
for line in open(f"{tmp}/cases"):
    i, path, cc, mib, sender, receiver, rc_s, rc_r, sha, rate_mbit = line.split(); c = f"{tmp}/c{i}"
    rate_mbit = float(rate_mbit)
    problems = []
    if rc_s != "0": problems.append(f"send exited {rc_s}: {tail(c + '.send.err')}")
    if rc_r != "0": problems.append(f"{receiver} did not confirm the SHA-256: {tail(c + '.recv.err')} {text(c + '.ldc.json')[:400] if receiver != 'peerlink' else ''}")
    if sha != "same": problems.append("the received file differs from the sent one")
    start = end = None
    for l in text(c + ".recv.err").splitlines():
        t, _, msg = l.partition(" ")
        if start is None and "receiving" in msg: start = float(t)
        if msg.startswith("progress: ") and "(100%)" in msg: end = float(t)
    size = int(mib) << 20
    secs = end - start if start is not None and end is not None and end > start else None
    if receiver != "peerlink":
        try: secs = json.loads(text(c + ".ldc.json").splitlines()[-1])["seconds"] or None
        except (ValueError, IndexError, KeyError): secs = None
    mbs = size / secs / 1e6 if secs else None
    frac = mbs * 8 / rate_mbit if mbs else None
    if frac is not None and receiver == "peerlink" and sender == "peerlink": goodput[(path, cc)] = frac
    e = load(c + ".emu0.json")
    failed += bool(problems)
    rows.append([i, path, cc, sender, receiver, mib, f"{secs:.1f}" if secs else "-", f"{mbs:.2f}" if mbs else "-",
                 f"{100 * frac:.1f}%" if frac is not None else "-", e.get("loss_drops", "-"), e.get("queue_drops", "-"),
                 e.get("max_wait_ms", "-"), "ok" if not problems else "FAIL " + "; ".join(problems)])
w = [max(len(h), *(len(str(r[k])) for r in rows)) for k, h in enumerate(cols)]
print(" ".join(h.rjust(w[k]) for k, h in enumerate(cols[:-1])), " result")
for r in rows:
    print(" ".join(str(v).rjust(w[k]) for k, v in enumerate(r[:-1])), "", r[-1])
for path in sorted({p for p, _ in goodput}):
    for cc in ("bbr", "default"):
        if (path, cc) in goodput and goodput.get((path, "rfc9260"), 0) > 0:
            print(f"# {path}: {cc}/rfc9260 goodput ratio {goodput[(path, cc)] / goodput[(path, 'rfc9260')]:.2f}")
print("# ofLink: file bytes x 8 / bottleneck rate (the header limit is ~92%); lossDrops/queueDrops/maxWaitMs:")
print("# the A>B emulator's random drops, drop-tail drops and longest queueing wait")
print(f"# {failed} check(s) failed")
sys.exit(1 if failed else 0)
EOF
exit $status
