#!/usr/bin/env bash
# Native peers in a room of `peerlink serve --room-mode sfu`, next to a headless Chromium
# page written from the protocol alone (tests/browser/sfu-native.mjs), in a network
# namespace of this test's own:
#   - `peerlink play` publishes a VP8 + Opus file made here with ffmpeg: the page decodes it;
#   - `peerlink chat` says "hello from native": the page hears it, and the chat prints the
#     page's "hello from chromium";
#   - `peerlink record` records the page and the player into one file each (stream id =
#     publisher), which ffmpeg decodes without error, with video and audio.
#   - files through the server, in a room of their own: `peerlink send` to everyone reaches
#     two `peerlink recv` (each checks the SHA-256; the sender hears "2 of 2"), `send --to`
#     reaches the one named only, and `send` alone in the room gives up with exit 6.
#   - simulcast, in a room of its own: `peerlink play --layer low.ivf high.ivf` (VP8
#     320x180 and 640x360 of one clip, made here) publishes one video in two layers; a
#     page (tests/browser/sfu-layers.mjs) decodes the top layer, then, once a second video
#     makes the player's a thumbnail (--thumbnails-above 1), the low layer.
# Each native peer makes one connection, to the server.
#
#   tests/e2e/sfu-native.sh [path/to/peerlink]
#   KEEP=DIR    keep the logs and recordings in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
ns=plsfun$$
tmp=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.3
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true
    rm -rf "$tmp" || true
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

ff() { ffmpeg -v error -y "$@" </dev/null; }
ff -f lavfi -i "testsrc=size=320x240:rate=15" -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 30 \
    -c:v libvpx -b:v 300k -g 15 -deadline realtime -c:a libopus -b:a 32k "$tmp/clip.webm"
# Two simulcast layers of one clip: same frames, rate and key frames, two sizes.
vp8=(-c:v libvpx -g 15 -keyint_min 15 -deadline realtime -lag-in-frames 0 -auto-alt-ref 0)
ff -f lavfi -i "testsrc=size=640x360:rate=15:duration=4" -filter_complex "[0:v]split=2[a][b];[a]scale=320:180[lo]" \
    -map "[lo]" "${vp8[@]}" -b:v 150k "$tmp/low.ivf" -map "[b]" "${vp8[@]}" -b:v 500k "$tmp/high.ivf"

export RUST_LOG=${RUST_LOG:-info}
# (Thumbnails above one video: the simulcast case's second video.)
# (--thumbnails-above 1 for the layers case: a simulcast publisher added to another case
# here would be shown in its lowest layer to any receiver of two videos.)
SERVE_ARGS="--room-mode sfu --thumbnails-above 1" media_lab "$ns" "$peerlink" "$tmp"
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
room=native-$$
meet=(--server "$ws" --room "$room")
mkdir -p "$tmp/rec"

# Every native peer is bounded: SIGINT after 80 s at most.
timeout -s INT 80 ip netns exec "$ns" "$peerlink" record --out "$tmp/rec" "${meet[@]}" --name recorder \
    >"$tmp/record.out" 2>"$tmp/record.err" &
record=$!
pids+=($record)
timeout -s INT 80 ip netns exec "$ns" "$peerlink" play "$tmp/clip.webm" "${meet[@]}" --name player \
    >"$tmp/play.out" 2>"$tmp/play.err" &
pids+=($!)
timeout 100 ip netns exec "$ns" node tests/browser/sfu-native.mjs "${app%/}" "$ws" "$room" >"$tmp/page.out" 2>&1 &
page=$!
pids+=($page)
# The server keeps no chat history: the chat joins once the page is in the room. Its line
# waits for its channel; standard input stays open (a closed one ends chat).
wait_for_line "$tmp/page.out" "the page decodes video" 60 || true
(echo "hello from native"; sleep 80) | timeout -s INT 80 ip netns exec "$ns" "$peerlink" chat "${meet[@]}" --name chatter \
    >"$tmp/chat.out" 2>"$tmp/chat.err" &
pids+=($!)
status=0
wait "$page" || status=$?
cat "$tmp/page.out"

# The recording ends (files finalised) on SIGINT.
kill -INT "$record" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$record" 2>/dev/null || break; sleep 0.1; done
fail() { echo "FAIL $*"; status=1; }
ok() { echo "ok   $*"; }

wait_for_line "$tmp/chat.out" "^hello from chromium$" 5 >/dev/null 2>&1 && ok "peerlink chat printed the page's line" \
    || fail "peerlink chat did not print the page's line: $(head -c 300 "$tmp/chat.out")"
for who in record play chat; do
    if ! grep -q "goes through the server" "$tmp/$who.err"; then
        fail "peerlink $who did not see the room in SFU mode"
    elif grep -q "is here; offering" "$tmp/$who.err"; then
        fail "peerlink $who offered to a participant instead of the server: $(grep -m1 offering "$tmp/$who.err")"
    else
        ok "peerlink $who joined through the server"
    fi
done
for name in chromium player; do
    f=$(ls "$tmp/rec/$room-$name".* 2>/dev/null | head -1 || true)
    if [ -z "$f" ]; then
        fail "no recording of $name (files: $(ls "$tmp/rec" | tr '\n' ' '))"
        continue
    fi
    frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$f" || echo 0)
    audio=$(ffprobe -v error -select_streams a:0 -show_entries stream=codec_name -of csv=p=0 "$f" || true)
    # (Passthrough timing: the camera's frames are not at a constant rate.)
    errors=$(ffmpeg -v error -i "$f" -fps_mode passthrough -enc_time_base -1 -f null - 2>&1 | head -3)
    echo "# $name: $(basename "$f"): $frames video frames, audio ${audio:-none}, $(stat -c %s "$f") bytes"
    if [ "${frames:-0}" -ge 30 ] && [ "$audio" = opus ] && [ -z "$errors" ]; then
        ok "the recording of $name decodes: $frames frames and Opus audio"
    else
        fail "the recording of $name: $frames frames, audio '${audio}', errors: $errors"
    fi
done

# Files through the server: two receivers that stay for more than one file.
froom=files-$$
fmeet=(--server "$ws" --room "$froom")
head -c 3145728 /dev/urandom >"$tmp/big.bin"
head -c 70000 /dev/urandom >"$tmp/small.bin"
mkdir -p "$tmp/in-a" "$tmp/in-b"
timeout 60 ip netns exec "$ns" "$peerlink" send "$tmp/small.bin" "${fmeet[@]}" --name alone --wait-receiver 3 \
    >"$tmp/alone.out" 2>"$tmp/alone.err" && code=0 || code=$?
[ "$code" = 6 ] && ok "send alone in an SFU room gave up with exit 6" \
    || fail "send alone in an SFU room: exit $code: $(tail -2 "$tmp/alone.err")"
for r in a b; do
    timeout -s INT 90 ip netns exec "$ns" "$peerlink" recv --keep-going --out "$tmp/in-$r" "${fmeet[@]}" --name "recv-$r" \
        >"$tmp/recv-$r.out" 2>"$tmp/recv-$r.err" &
    pids+=($!)
    eval "recv_$r=\$!"
done
# The file goes to those connected to the server when it is sent: both, first.
for r in a b; do
    wait_for_line "$tmp/recv-$r.err" "connection Connected" 30 >/dev/null 2>&1 || fail "recv-$r did not connect"
done
timeout 60 ip netns exec "$ns" "$peerlink" send "$tmp/big.bin" "${fmeet[@]}" --name sender \
    >"$tmp/send.out" 2>"$tmp/send.err" && code=0 || code=$?
want=$(sha256sum <"$tmp/big.bin" | cut -d' ' -f1)
if [ "$code" = 0 ] && grep -q "2 of 2 receivers confirmed" "$tmp/send.err"; then
    ok "send through the server: 2 of 2 receivers confirmed"
else
    fail "send through the server: exit $code: $(tail -3 "$tmp/send.err")"
fi
for r in a b; do
    got=$(sha256sum <"$tmp/in-$r/big.bin" 2>/dev/null | cut -d' ' -f1 || true)
    [ "$got" = "$want" ] && grep -q "from sender (.*) through the server" "$tmp/recv-$r.err" \
        && ok "recv-$r got the 3 MiB file from sender, SHA-256 equal" \
        || fail "recv-$r: ${got:-nothing} (want $want): $(tail -2 "$tmp/recv-$r.err")"
done
timeout 60 ip netns exec "$ns" "$peerlink" send "$tmp/small.bin" "${fmeet[@]}" --name sender2 --to recv-a \
    >"$tmp/send2.out" 2>"$tmp/send2.err" && code=0 || code=$?
if [ "$code" = 0 ] && grep -q "1 of 1 receivers confirmed" "$tmp/send2.err" \
    && cmp -s "$tmp/small.bin" "$tmp/in-a/small.bin" && [ ! -e "$tmp/in-b/small.bin" ]; then
    ok "send --to recv-a through the server reached recv-a only"
else
    fail "send --to recv-a: exit $code, in b: $(ls "$tmp/in-b" | tr '\n' ' '): $(tail -3 "$tmp/send2.err")"
fi
kill -INT "$recv_a" "$recv_b" 2>/dev/null || true

# Simulcast: one video in two layers, the low one given with --layer.
lroom=layers-$$
timeout -s INT 100 ip netns exec "$ns" "$peerlink" play --layer "$tmp/low.ivf" "$tmp/high.ivf" --loop \
    --server "$ws" --room "$lroom" --name layered >"$tmp/play-layers.out" 2>"$tmp/play-layers.err" &
pids+=($!)
lstatus=0
timeout 80 ip netns exec "$ns" node tests/browser/sfu-layers.mjs "${app%/}" "$ws" "$lroom" >"$tmp/layers.out" 2>&1 \
    || lstatus=$?
cat "$tmp/layers.out"
if [ $lstatus -eq 0 ] && grep -q "takes video layers \[0, 1\] of 2" "$tmp/play-layers.err"; then
    ok "peerlink play --layer: the page decoded both layers"
else
    fail "peerlink play --layer: page exit $lstatus, $(grep -m1 "takes video layers" "$tmp/play-layers.err" || echo 'no layers taken')"
fi

if [ $status -ne 0 ]; then
    for f in serve.log record.err play.err chat.err alone.err send.err send2.err recv-a.err recv-b.err play-layers.err; do
        echo "# $f (last 15 lines):"
        tail -15 "$tmp/$f"
    done
fi
exit $status
