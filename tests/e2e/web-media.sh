#!/usr/bin/env bash
# The browser app shows a native peer's media (tests/browser/web-media.mjs), in headless
# Chromium and a network namespace of this test's own, through `peerlink serve`:
#   play:    `peerlink play` of a VP8 IVF + Opus Ogg made here (8 s, 320x240, 15 fps) shows as a
#            tile whose <video> plays (320x240, currentTime advancing, framesDecoded > 80% of
#            the frames elapsed) with audio received, with the app's (fake) camera on and with
#            getUserMedia refused (the app joins receive-only);
#   record:  the app with its (fake) camera on and `peerlink record`: the record peer shows as a
#            connected tile without video, and its file has a 320x240 or 640x480 video stream
#            that decodes with `ffmpeg -xerror`.
# Both join orders each (the page first / the native peer first).
#
#   tests/e2e/web-media.sh [path/to/peerlink]
#   CASES="play:page-first record:native-first ..."   a subset
#   KEEP=DIR        keep the inputs, recordings, server log and screenshots in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
CLIP=8
FPS=15
ns=plwebm$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; sleep 0.3; ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; rm -rf "$tmp" || true' EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

ff() { ffmpeg -v error -y "$@" </dev/null; }
ff -f lavfi -i "testsrc=size=320x240:rate=$FPS" -t $CLIP -c:v libvpx -b:v 400k -g $FPS -deadline realtime "$tmp/in.ivf"
ff -f lavfi -i "sine=frequency=440:sample_rate=48000" -t $CLIP -c:a libopus "$tmp/in.ogg"

media_lab "$ns" "$peerlink" "$tmp"
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
echo "# app $app, signaling $ws (namespace $ns)"

status=0
CLIP=$CLIP FPS=$FPS SCREENSHOTS=${KEEP:+$tmp/screenshots} timeout 88 ip netns exec "$ns" \
    node tests/browser/web-media.mjs "$app" "$ws" "$peerlink" "$tmp/in.ivf" "$tmp/in.ogg" "$tmp" || status=$?
if [ $status -ne 0 ]; then
    echo "# server log (last 20 lines):"
    tail -20 "$tmp/serve.log"
fi
exit $status
