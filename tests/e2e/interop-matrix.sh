#!/usr/bin/env bash
# The interoperability matrix (issue 20, docs/interop.md): `peerlink chat` against Firefox ESR
# (headless, WebDriver BiDi), libdatachannel (node-datachannel), werift and Pion, each as
# offerer and as answerer, direct and relay-only through our TURN; then the browser app in
# Firefox with the browser app in Chromium (call, chat, a file), direct in both join orders and
# relay-only; and Firefox's fake camera and microphone with `peerlink echo`, `record` and
# `play` in both join orders (echo once relay-only); and Pion's and werift's VP8 and Opus
# tracks (from files made here) with `peerlink record`, `play` and `echo`, in both join
# orders. Every peer speaks our signaling protocol and is given only our own servers.
#
# Everything runs in network namespaces of its own (nothing reaches outside them):
#   main: 203.0.113.10 (peerlink serve: signaling, STUN, TURN; peerlink chat; the browsers;
#         werift; Pion), a default route to the veth's far end so browsers gather candidates;
#   far:  198.51.100.2, joined to main by a veth, with nftables letting through only our TURN
#         port and the signaling port: libdatachannel's relay case runs here, since its ICE
#         (libjuice) checks from its host socket whatever the relay policy says.
#
#   tests/e2e/interop-matrix.sh [path/to/peerlink]
# Env: RUNS (each case this many times, default 1), ONLY (regular expression on case names),
#      SDP_DIR (keep each stack's SDP and result there), APP=0 (no browser app rows),
#      MEDIA_RUNS (runs of the media rows, default RUNS; 0: none),
#      OBSERVE=FILE (write the DTLS handshakes' cleartext facts there: tests/interop/dtls-observe.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
tmp=$(mktemp -d)
ns=plx-ix-$$
far=plx-ixf-$$
PIDS=()
cleanup() {
    kill_all
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$far" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for need in node firefox-esr chromium; do
    command -v "$need" >/dev/null || { echo "$need missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -d tests/interop/node_modules/puppeteer-core ] && [ -d tests/interop/node_modules/werift ] &&
    [ -d tests/interop/node_modules/node-datachannel ] ||
    { echo "tests/interop/node_modules incomplete: run scripts/install-test-deps.sh" >&2; exit 1; }

# Pion, built offline in GOPATH mode from Debian's packages (as bench/media.sh does).
GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
    go build -o "$tmp/pion-peer" ./tests/interop/pion-peer

# What `peerlink play` sends to Firefox: 6 s of 320x240 VP8 at 15 fps (a key frame a second)
# and Opus, in WebM.
ffmpeg -v error -y -f lavfi -i testsrc=size=320x240:rate=15 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 6 \
    -c:v libvpx -b:v 400k -g 15 -deadline realtime -c:a libopus -b:a 48k "$tmp/play.webm" </dev/null
# What Pion and werift send, and `peerlink play` sends them: 3 s of the same as VP8 IVF
# (45 frames) and Opus Ogg (packets of 20 ms, one a page: Pion's oggreader reads pages).
ffmpeg -v error -y -f lavfi -i testsrc=size=320x240:rate=15 -t 3 \
    -c:v libvpx -b:v 400k -g 15 -deadline realtime "$tmp/media.ivf" </dev/null
ffmpeg -v error -y -f lavfi -i sine=frequency=440:sample_rate=48000 -t 3 \
    -c:a libopus -b:a 48k -page_duration 20000 "$tmp/media.ogg" </dev/null
packets() { ffprobe -v error -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$1"; }
media_frames=$(packets "$tmp/media.ivf")
media_opus=$(packets "$tmp/media.ogg")

veth_namespace "$ns" 203.0.113.10/24
ip -n "$ns" addr add 203.0.113.1/24 dev v1
ip -n "$ns" route add default via 203.0.113.1 dev v0

# Signaling on every address of the namespace: pages load from 127.0.0.1 (a secure context,
# so the app gets its fake camera), the far namespace reaches 203.0.113.10.
ip netns exec "$ns" "$peerlink" serve --http 0.0.0.0:0 --listen 203.0.113.10:3478 --relay-ip 203.0.113.10 \
    --allow-peer 203.0.113.0/24 --messages-per-second 200 >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "browser app at http://" 15
port=$(sed -nE 's/.*signaling on ws:\/\/[^:]+:([0-9]+)\/ws.*/\1/p' "$tmp/serve.out" | head -1)
ws="ws://203.0.113.10:$port/ws"
app="http://127.0.0.1:$port/"

ip netns add "$far"
ip -n "$far" link set lo up
ip link add ixf0-$$ netns "$ns" type veth peer name f1 netns "$far"
ip -n "$ns" addr add 198.51.100.1/24 dev ixf0-$$
ip -n "$ns" link set ixf0-$$ up
ip -n "$far" addr add 198.51.100.2/24 dev f1
ip -n "$far" link set f1 up
ip -n "$far" route add default via 198.51.100.1 dev f1
ours="{ udp . 3478, tcp . 3478, tcp . $port }"
ip netns exec "$far" nft -f - <<EOF
table inet only_our_servers {
    chain output {
        type filter hook output priority 0; policy accept;
        oif "lo" accept
        ip daddr 203.0.113.10 meta l4proto . th dport $ours accept
        counter drop
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iif "lo" accept
        ip saddr 203.0.113.10 meta l4proto . th sport $ours accept
        counter drop
    }
}
EOF
# OBSERVE=FILE: the DTLS handshakes' cleartext facts, for docs/interop.md (not a verdict).
if [ -n "${OBSERVE:-}" ]; then
    ip netns exec "$ns" python3 tests/interop/dtls-observe.py "$OBSERVE" lo ixf0-$$ &
    PIDS+=($!)
fi
echo "# signaling $ws, app $app; far namespace $far reaches only 203.0.113.10 ports 3478 and $port"

status=0
ip netns exec "$ns" env FAR_NS="$far" PION="$tmp/pion-peer" RUNS="${RUNS:-1}" ONLY="${ONLY:-}" \
    SDP_DIR="${SDP_DIR:-}" APP="${APP:-1}" MEDIA_FILE="$tmp/play.webm" \
    MEDIA_IVF="$tmp/media.ivf" MEDIA_OGG="$tmp/media.ogg" \
    MEDIA_FRAMES="$media_frames" MEDIA_OPUS_PACKETS="$media_opus" MEDIA_RUNS="${MEDIA_RUNS:-${RUNS:-1}}" \
    timeout $((300 * ${RUNS:-1} + 120 * ${MEDIA_RUNS:-${RUNS:-1}})) nice -n 10 node tests/interop/matrix.mjs "$peerlink" "$ws" "$app" 203.0.113.10 || status=1
dropped=$(ip netns exec "$far" nft list table inet only_our_servers | grep -oE 'packets [0-9]+' | awk '{s+=$2} END {print s+0}')
echo "# the far namespace dropped $dropped packets that were not for our TURN or signaling"
if [ $status -ne 0 ]; then
    echo "# server log (last 30 lines):"
    tail -30 "$tmp/serve.log"
fi
exit $status
