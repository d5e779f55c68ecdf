#!/usr/bin/env bash
# CPU per received media packet: our receive path (peerlink-rtp SRTP unprotect, RTP parse,
# peerlink-media's depacketizer with its reorder window, VP8 frames drained as they complete;
# crates/media/examples/recv_bench.rs, release) next to Pion's (pion/srtp DecryptRTP, pion/rtp
# Unmarshal, webrtc's samplebuilder with the VP8 depacketizer; bench/media-ref/main.go, built
# here offline in GOPATH mode from Debian's Pion packages), same machine, same run, same
# packets: FRAMES VP8 frames of 640x480-like sizes (a ~30 KB key frame every 60 frames, 3-6 KB
# otherwise) in 1,200-byte payloads, AES_CM_128_HMAC_SHA1_80, one packet in 97 swapped with
# the next. Both check every frame comes out (Pion's samplebuilder keeps the last one until a
# later packet arrives). Prints ns per packet and per frame (medians of ROUNDS runs, each the
# median of REPS passes) and the ratios. Asserts nothing about speed.
#
#   bench/media.sh                        # ROUNDS=5 FRAMES=1800 REPS=15
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
FRAMES=${FRAMES:-1800}
REPS=${REPS:-15}
gopath=/usr/share/gocode
command -v go >/dev/null && [ -d "$gopath/src/github.com/pion/webrtc" ] ||
    { echo "go or Debian's Pion packages missing: run scripts/install-test-deps.sh" >&2; exit 1; }

cargo build --release -q -p peerlink-media --example recv_bench
ours=${CARGO_TARGET_DIR:-target}/release/examples/recv_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GO111MODULE=off GOPATH=$gopath GOFLAGS= go build -o "$tmp/media_ref" ./bench/media-ref

"$ours" --frames "$FRAMES" --reps 1 --write "$tmp/input" >/dev/null
for round in $(seq "$ROUNDS"); do
    # Alternate who goes first, so a burst of load elsewhere does not always hit one side.
    if [ $((round % 2)) = 1 ]; then order="peerlink pion"; else order="pion peerlink"; fi
    for impl in $order; do
        case $impl in
        peerlink) echo "peerlink $("$ours" --frames "$FRAMES" --reps "$REPS")" ;;
        pion) echo "pion $("$tmp/media_ref" "$tmp/input" "$REPS")" ;;
        esac
    done
done >"$tmp/results"

python3 - "$tmp/results" <<'PY'
import statistics, sys
runs, seen = {}, {}
for line in open(sys.argv[1]):
    impl, *kv = line.split()
    fields = dict(item.split("=") for item in kv)
    seen[impl] = fields
    for key in ("packet_ns", "frame_ns"):
        runs.setdefault((impl, key), []).append(float(fields[key]))
med = {k: statistics.median(v) for k, v in runs.items()}
p = seen["peerlink"]
print(f"{p['packets']} packets, {p['frames']} frames, {int(p['bytes']) / 1e6:.1f} MB of VP8 "
      f"(Pion's samplebuilder gave {seen['pion']['frames']}: it holds the last frame)")
print(f"{'':<10} {'ns/packet':>10} {'range':>17} {'ns/frame':>10}")
for impl in ("peerlink", "pion"):
    pk = runs[(impl, "packet_ns")]
    print(f"{impl:<10} {med[(impl, 'packet_ns')]:>10.1f} {min(pk):>8.1f}-{max(pk):<8.1f} {med[(impl, 'frame_ns')]:>10.1f}")
for key, label in (("packet_ns", "per packet"), ("frame_ns", "per frame")):
    print(f"pion/peerlink {label}: {med[('pion', key)] / med[('peerlink', key)]:.2f}x")
PY
