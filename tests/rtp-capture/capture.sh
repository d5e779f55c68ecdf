#!/usr/bin/env bash
# Captures real RTP and RTCP from headless Chromium for crates/rtp/tests/fixtures/chromium/:
# two RTCPeerConnections in one page (tests/browser/rtp-capture.mjs), the first sending its fake
# camera and microphone to the second, with --disable-webrtc-encryption so the media is plain
# RTP/RTCP on the wire. Everything runs in a network namespace of this script's own (a veth
# with 203.0.113.10 and a default route that ends inside it, so Chromium gathers a host
# candidate; nothing leaves the namespace): the two peers talk over its lo, where sniff.py
# records every UDP datagram into a pcap file. nftables drops LOSS percent of the large UDP
# datagrams (video) on input, so that the receiver sends NACKs and the sender retransmits over
# RTX (the sniffer sees a datagram before that drop: the pcap has everything that was sent).
# pick.py then chooses the fixtures from the pcap and writes them to OUT_DIR.
#
#   tests/rtp-capture/capture.sh [OUT_DIR]     (default crates/rtp/tests/fixtures/chromium)
#   LOSS=N          percent of UDP datagrams over 400 bytes (video) dropped (default 3; 0 = none)
#   DURATION_MS=N   how long media flows (default 8000)
#   KEEP=DIR        keep the pcap, SDPs and getStats() output in DIR
# Needs root (namespace, raw socket), Debian's chromium, node with tests/browser/node_modules.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
out=$(realpath -m "${1:-crates/rtp/tests/fixtures/chromium}")
loss=${LOSS:-3}
ns=plrtp$$
tmp=$(mktemp -d)
sniff_pid=
cleanup() {
    [ -n "$sniff_pid" ] && kill "$sniff_pid" 2>/dev/null || true
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
veth_namespace "$ns" 203.0.113.10/24
ip -n "$ns" route add default via 203.0.113.1 dev v0
if [ "$loss" != 0 ]; then
    ip netns exec "$ns" nft -f - <<NFT
table inet rtpcap {
    chain in {
        type filter hook input priority 0;
        meta l4proto udp meta length > 400 numgen random mod 100 < $loss drop
    }
}
NFT
fi
ip netns exec "$ns" python3 tests/rtp-capture/sniff.py lo "$tmp/capture.pcap" &
sniff_pid=$!
sleep 0.5
ip netns exec "$ns" node tests/browser/rtp-capture.mjs "$tmp"
sleep 0.5
kill "$sniff_pid"
wait "$sniff_pid" || true
sniff_pid=
mkdir -p "$out"
python3 tests/rtp-capture/pick.py "$tmp/capture.pcap" "$tmp/offer.sdp" "$tmp/answer.sdp" "$out"
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$tmp"/capture.pcap "$tmp"/offer.sdp "$tmp"/answer.sdp "$tmp"/info.json "$KEEP"/
fi
