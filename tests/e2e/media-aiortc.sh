#!/usr/bin/env bash
# The native peer's media against aiortc (tests/interop/aiortc_media.py, a Python WebRTC stack
# we did not write, installed by scripts/install-test-deps.sh into tests/interop/.venv),
# through `peerlink serve`, in a network namespace of this test's own; aiortc gets only our
# server's iceServers.
#   record: aiortc sends a synthetic 320x240 15 fps video (pinned to VP8, or to H.264 with
#           setCodecPreferences) and a 440 Hz tone as Opus to `peerlink record`; the file must
#           decode with `ffmpeg -xerror` to >= 70% of the frames aiortc's track produced, at
#           320x240, with Opus audio.
#   play:   `peerlink play` sends files made here with ffmpeg (VP8 IVF + Opus Ogg; H.264
#           Constrained Baseline Annex B + Opus Ogg) to aiortc, which decodes them: >= 85% of
#           the file's video frames, at the file's resolution, and >= 85% of its audio.
# aiortc's jitter buffer hands a frame on only when the next one starts, so it never decodes
# the file's last frame (59 of 60). Each case runs in both join orders (`first`: aiortc joins
# the room first, and peerlink offers; `second`: peerlink is there first, and aiortc offers).
# Prints one table; exits non-zero if any case fails.
#
#   tests/e2e/media-aiortc.sh [path/to/peerlink]
#   CASES="record:vp8:first play:h264:second ..."   a subset
#   KEEP=DIR   keep every JSON, log and recording in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
python=$PWD/tests/interop/.venv/bin/python  # not resolved: a venv is known by its own path
"$python" -c 'import aiortc, av' || { echo "no aiortc in tests/interop/.venv: run scripts/install-test-deps.sh" >&2; exit 1; }
CASES=${CASES:-"record:vp8:first record:vp8:second record:h264:first record:h264:second \
play:vp8:first play:vp8:second play:h264:first play:h264:second"}
CLIP=4    # seconds of each input file for play
SEND=5    # seconds aiortc sends for record
FPS=15
ns=plaiortc$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; sleep 0.3; ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; rm -rf "$tmp" || true' EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

# Inputs for play: 320x240 at 15 fps, a key frame every second, no B-frames.
src=(-f lavfi -i "testsrc=size=320x240:rate=$FPS" -t "$CLIP")
ff() { ffmpeg -v error -y "$@" </dev/null; }
ff "${src[@]}" -c:v libvpx -b:v 400k -g $FPS -deadline realtime "$tmp/in-vp8.ivf"
ff "${src[@]}" -c:v libx264 -profile:v baseline -bf 0 -g $FPS -pix_fmt yuv420p -bsf:v h264_mp4toannexb -f h264 "$tmp/in-h264.h264"
ff -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$CLIP" -c:a libopus -b:a 48k "$tmp/in-opus.ogg"
echo "# inputs: $CLIP s at 320x240 $FPS fps ($(cd "$tmp" && ls in-* | tr '\n' ' '))"

media_lab "$ns" "$peerlink" "$tmp"

aiortc() { # room args... (bounded)
    local room=$1
    shift
    timeout 45 ip netns exec "$ns" "$python" tests/interop/aiortc_media.py --server "$ws" --room "$room" "$@" \
        >"$tmp/$room.aiortc.json" 2>"$tmp/$room.aiortc.err"
}
native() { # room command args... (bounded: SIGINT after 30 s)
    local room=$1
    shift
    timeout -s INT 30 ip netns exec "$ns" "$peerlink" "$@" --server "$ws" --room "$room" \
        >"$tmp/$room.native.out" 2>"$tmp/$room.native.err"
}

i=0
for c in $CASES; do
    i=$((i + 1))
    IFS=: read -r kind codec order <<<"$c"
    room=a$i
    rc_a=0; rc_n=0
    case $kind in
    record)
        mkdir -p "$tmp/$room.rec"
        nat=(record --out "$tmp/$room.rec" --name rec)
        ai=(--send "$codec" --duration $SEND --fps $FPS)
        ;;
    play)
        case $codec in
        vp8) files=("$tmp/in-vp8.ivf" "$tmp/in-opus.ogg") ;;
        h264) files=("$tmp/in-h264.h264" "$tmp/in-opus.ogg") ;;
        esac
        nat=(play "${files[@]}" --fps $FPS --name play)
        ai=(--recv --duration $((CLIP + 15)))
        ;;
    esac
    # Record ends when the room empties (aiortc leaves after sending); play at the file's end,
    # and aiortc then sees it leave.
    if [ "$order" = first ]; then
        aiortc "$room" "${ai[@]}" &
        pa=$!
        wait_for_line "$tmp/$room.aiortc.err" "joined as" 20 || true
        native "$room" "${nat[@]}" &
        pn=$!
    else
        native "$room" "${nat[@]}" &
        pn=$!
        wait_for_line "$tmp/$room.native.err" "joined room" 20 || true
        aiortc "$room" "${ai[@]}" &
        pa=$!
    fi
    wait "$pa" || rc_a=$?
    wait "$pn" || rc_n=$?
    echo "$c $room $rc_a $rc_n" >>"$tmp/cases"
done

"$python" - "$tmp" "$CLIP" "$FPS" <<'EOF'
import re, sys
sys.path.insert(0, "tests/lib")
from media_checks import first_json, recording, tail
tmp, clip, fps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def load(room):
    return first_json(f"{tmp}/{room}.aiortc.json")
def recorded(room):
    """What `peerlink record` says it took in: 'video/audio' frames and bytes written."""
    m = re.search(r"frames: \[(\d+), (\d+)\].*?bytes: (\d+)", tail(f"{tmp}/{room}.native.err", 50))
    return f"{m.group(1)}/{m.group(2)} {m.group(3)}B" if m else "-"
# decoded: frames in the recording (record) or decoded by aiortc (play); rec-in: frames (video/
# audio) and bytes `peerlink record` reports it received and wrote.
fmt = "{:<18} {:<11} {:>5} {:>7} {:>4} {:>8} {:>10} {:>14} {}"
print(fmt.format("case", "codec", "sent", "decoded", "%", "res", "audio", "rec-in", "result"))
failed = 0
for line in open(f"{tmp}/cases"):
    c, room, rc_a, rc_n = line.split()
    kind = c.split(':')[0]
    d = load(room)
    problems = []
    if rc_a != '0' or not d:
        problems.append(f"aiortc exited {rc_a}: {tail(f'{tmp}/{room}.aiortc.err')}")
    if rc_n != '0':
        problems.append(f"peerlink {kind} exited {rc_n}: {tail(f'{tmp}/{room}.native.err')}")
    if d.get('errors'):
        problems.append(f"aiortc: {d['errors']}")
    codec = d.get('codec', '-')
    if codec.split('/')[0].lower() != c.split(':')[1]:
        problems.append(f"negotiated {codec}")
    sent, dec, res, audio, rec = 0, 0, '-', '-', '-'
    if kind == 'record':
        sent = d.get('video_sent', 0)
        rec = recorded(room)
        file_problems, vs, aus = recording(f"{tmp}/{room}.rec")
        problems += file_problems
        if vs is not None:
            dec = int(vs.get('nb_read_frames') or 0)
            res = f"{vs.get('width')}x{vs.get('height')}"
            want = codec.split('/')[0].lower()
            if vs.get('codec_name') != want:
                problems.append(f"file's video is {vs.get('codec_name')}, sent {want}")
            if res != d.get('size'):
                problems.append(f"file {res}, sent {d.get('size')}")
            adur = float(aus.get('duration') or 0)
            audio = f"{aus.get('codec_name', '-')} {adur:.1f}s"
            if aus.get('codec_name') != 'opus' or adur < 0.7 * d.get('sent_s', 0):
                problems.append(f"audio {audio} (want opus of about the {d.get('sent_s')} s sent)")
        if not sent or dec < 0.7 * sent:
            problems.append(f"{dec} frames in the file of {sent} sent (<70%)")
    else:
        sent = int(clip * fps)
        dec = d.get('video_decoded', 0)
        sizes = d.get('sizes') or {}
        res = max(sizes, key=sizes.get) if sizes else '-'
        audio = f"opus {d.get('audio_s', 0):.1f}s"
        if dec < 0.85 * sent:
            problems.append(f"decoded {dec} of the file's {sent} frames (<85%)")
        if set(sizes) - {"320x240"} or not sizes:
            problems.append(f"resolutions {sizes}")
        if d.get('audio_s', 0) < 0.85 * clip:
            problems.append(f"{d.get('audio_s', 0)} s of the file's {clip:.0f} s of audio decoded (<85%)")
    pct = f"{100 * dec / sent:.0f}" if sent else "-"
    print(fmt.format(c, codec, sent, dec, pct, res, audio, rec, "ok" if not problems else "FAIL " + "; ".join(problems)))
    failed += bool(problems)
print(f"# {failed} case(s) failed")
sys.exit(1 if failed else 0)
EOF
