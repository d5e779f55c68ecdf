#!/usr/bin/env bash
# The native peer's media against headless Chromium (tests/browser/media-peer.mjs), through
# `peerlink serve`, in a network namespace of this test's own:
#   record: Chromium sends its fake camera (VP8, VP9, H.264 Constrained Baseline, AV1; each
#           pinned with setParameters) and microphone to `peerlink record`; the file must decode
#           with `ffmpeg -xerror` to >= 70% of the frames Chromium reports sent, at the sent
#           resolution, with Opus audio of about the call's length. Once relay-only (Chromium
#           through our TURN).
#   play:   `peerlink play` sends files made here with ffmpeg (VP8, VP9, AV1 IVF; H.264
#           Constrained Baseline Annex B; Opus Ogg; WebM VP9+Opus) to Chromium: framesDecoded
#           >= 85% of the file's frames, the file's resolution, no freeze, audio concealment
#           under 5%.
#   echo:   Chromium -> `peerlink echo` -> Chromium in both join orders: the returned video
#           decodes (>= 70% of the frames sent) at the sent resolution, audio comes back.
# Prints one table; exits non-zero if any case fails.
#
#   tests/e2e/media-chromium.sh [path/to/peerlink]
#   CASES="record:vp8 play:vp9 echo:vp8:first ..."   a subset
#   KEEP=DIR   keep every JSON, log and recording in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
CASES=${CASES:-"record:vp8 record:vp9 record:h264 record:av1 record:vp8:relay \
play:vp8 play:vp9 play:av1 play:h264 play:webm play:stdin echo:vp8:first echo:vp8:second echo:h264:first"}
CLIP=8    # seconds of each input file
FPS=15
ns=plmedia$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; sleep 0.3; ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; rm -rf "$tmp" || true' EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

# Inputs for play: 320x240 at 15 fps, a key frame every second, no B-frames.
src=(-f lavfi -i "testsrc=size=320x240:rate=$FPS" -t "$CLIP")
aud=(-f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$CLIP")
ff() { ffmpeg -v error -y "$@" </dev/null; }
ff "${src[@]}" -c:v libvpx -b:v 400k -g $FPS -deadline realtime "$tmp/in-vp8.ivf"
ff "${src[@]}" -c:v libvpx-vp9 -b:v 400k -g $FPS -deadline realtime -cpu-used 8 "$tmp/in-vp9.ivf"
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libaom-av1; then
    ff "${src[@]}" -c:v libaom-av1 -b:v 300k -g $FPS -cpu-used 8 -usage realtime "$tmp/in-av1.ivf"
else
    ff "${src[@]}" -c:v libsvtav1 -b:v 300k -g $FPS -preset 12 "$tmp/in-av1.ivf"
fi
ff "${src[@]}" -c:v libx264 -profile:v baseline -bf 0 -g $FPS -pix_fmt yuv420p -bsf:v h264_mp4toannexb -f h264 "$tmp/in-h264.h264"
ff "${aud[@]}" -c:a libopus -b:a 48k "$tmp/in-opus.ogg"
ff "${src[@]}" "${aud[@]}" -c:v libvpx-vp9 -b:v 400k -g $FPS -deadline realtime -cpu-used 8 -c:a libopus -b:a 48k "$tmp/in-webm.webm"
echo "# inputs: $CLIP s at 320x240 $FPS fps ($(cd "$tmp" && ls in-* | tr '\n' ' '))"

media_lab "$ns" "$peerlink" "$tmp"

chromium() { # room name args... (bounded)
    local room=$1 n=$2
    shift 2
    timeout 60 ip netns exec "$ns" node tests/browser/media-peer.mjs --server "$ws" --room "$room" --name "$n" "$@" \
        >"$tmp/$room.$n.json" 2>"$tmp/$room.$n.err"
}
native() { # room log command args... (bounded: SIGINT after $LIMIT s, default 40)
    local room=$1 log=$2
    shift 2
    timeout -s INT "${LIMIT:-40}" ip netns exec "$ns" "$peerlink" "$@" --server "$ws" --room "$room" >"$tmp/$room.$log.out" 2>"$tmp/$room.$log.err"
}

i=0
for c in $CASES; do
    i=$((i + 1))
    IFS=: read -r kind codec extra <<<"$c"
    room=m$i
    rc_c=0; rc_n=0
    case $kind in
    record)
        args=(--send video,audio --codec "$codec" --duration 6)
        [ "$extra" = relay ] && args+=(--relay)
        mkdir -p "$tmp/$room.rec"
        native "$room" native record --out "$tmp/$room.rec" --name rec &
        pn=$!
        wait_for_line "$tmp/$room.native.err" "joined room" 20 || true
        chromium "$room" chr "${args[@]}" || rc_c=$?
        # The room empties when Chromium leaves: record finalises and exits 0.
        wait "$pn" || rc_n=$?
        ;;
    play)
        case $codec in
        webm) files=("$tmp/in-webm.webm") ;;
        *) files=("$tmp/in-$codec.ivf" "$tmp/in-opus.ogg") ;;
        esac
        [ "$codec" = h264 ] && files=("$tmp/in-h264.h264" "$tmp/in-opus.ogg")
        if [ "$codec" = stdin ]; then
            # A live source through a pipe: VP8 IVF on standard input, Opus from a file.
            native "$room" native play - "$tmp/in-opus.ogg" --format ivf --name play <"$tmp/in-vp8.ivf" &
        else
            native "$room" native play "${files[@]}" --fps $FPS --name play &
        fi
        pn=$!
        wait_for_line "$tmp/$room.native.err" "joined room" 20 || true
        chromium "$room" chr --recv --duration $((CLIP + 1)) || rc_c=$?
        wait "$pn" || rc_n=$?
        ;;
    echo)
        args=(--send video,audio --recv --codec "$codec" --duration 6)
        # Echo runs until interrupted: SIGINT once Chromium is done with it.
        if [ "$extra" = first ]; then
            LIMIT=14 native "$room" native echo --name echo &
            pn=$!
            wait_for_line "$tmp/$room.native.err" "joined room" 20 || true
            chromium "$room" chr "${args[@]}" || rc_c=$?
        else
            chromium "$room" chr "${args[@]}" --timeout 30 &
            pc=$!
            wait_for_line "$tmp/$room.chr.err" "joined as" 20 || true
            LIMIT=12 native "$room" native echo --name echo &
            pn=$!
            wait "$pc" || rc_c=$?
        fi
        wait "$pn" || rc_n=$?
        ;;
    esac
    echo "$c $room $rc_c $rc_n" >>"$tmp/cases"
done

python3 - "$tmp" "$CLIP" "$FPS" <<'EOF'
import sys
sys.path.insert(0, "tests/lib")
from media_checks import first_json, recording, tail
tmp, clip, fps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def load(room):
    return first_json(f"{tmp}/{room}.chr.json")
fmt = "{:<18} {:<8} {:>6} {:>8} {:>5} {:>9} {:>7} {:>9} {:<11} {}"
print(fmt.format("case", "codec", "sent", "decoded", "%", "res", "freeze", "audio", "pair", "result"))
failed = 0
for line in open(f"{tmp}/cases"):
    c, room, rc_c, rc_n = line.split()
    kind = c.split(':')[0]
    d = load(room)
    peer = (d.get('peers') or [{}])[0]
    pair = peer.get('pair') or {}
    ptype = f"{(pair.get('local') or {}).get('type', '-')}/{(pair.get('remote') or {}).get('type', '-')}"
    out = {o['kind']: o for o in peer.get('outbound', [])}
    inb = {o['kind']: o for o in peer.get('inbound', [])}
    problems = []
    if rc_c != '0':
        problems.append(f"chromium exited {rc_c}: {tail(f'{tmp}/{room}.chr.err')}")
    # Echo ends by SIGINT from timeout (124) and must have left cleanly before that.
    if rc_n != '0' and not (kind == 'echo' and rc_n == '124' and 'interrupted; leaving' in tail(f'{tmp}/{room}.native.err', 50)):
        problems.append(f"peerlink {kind} exited {rc_n}: {tail(f'{tmp}/{room}.native.err')}")
    codec, sent, dec, res, freeze, audio = '-', 0, 0, '-', '-', '-'
    if kind == 'record':
        v = out.get('video', {})
        codec = (v.get('codec') or '-').replace('video/', '')
        sent = v.get('framesSent', 0)
        file_problems, vs, aus = recording(f"{tmp}/{room}.rec")
        problems += file_problems
        if vs is not None:
            dec = int(vs.get('nb_read_frames') or 0)
            res = f"{vs.get('width')}x{vs.get('height')}"
            if not sent or dec < 0.7 * sent:
                problems.append(f"{dec} frames in the file of {sent} sent (<70%)")
            if res != f"{v.get('frameWidth')}x{v.get('frameHeight')}":
                problems.append(f"file {res}, sent {v.get('frameWidth')}x{v.get('frameHeight')}")
            adur = float(aus.get('duration') or 0)
            audio = f"{aus.get('codec_name', '-')} {adur:.1f}s"
            if aus.get('codec_name') != 'opus' or adur < 4.5:
                problems.append(f"audio {audio} (want opus of about the call's 6 s)")
            if c.endswith(':relay') and (pair.get('local') or {}).get('type') != 'relay':
                problems.append(f"pair {ptype}, not relayed")
    elif kind == 'play':
        v, a = inb.get('video', {}), inb.get('audio', {})
        codec = (v.get('codec') or '-').replace('video/', '')
        sent = int(clip * fps)
        dec = v.get('framesDecoded', 0)
        res = f"{v.get('frameWidth')}x{v.get('frameHeight')}"
        freeze = v.get('freezeCount', '-')
        # Concealment while the file's audio flowed: from the first point with packets to the
        # last point where more had come (after the file's end the receiver conceals silence).
        pts = [p for t in d.get('audioTimeline', []) for p in t['points']]
        # (The last interval with packets is left out: the stream ended within it.)
        flowing = [p for i, p in enumerate(pts[:-1]) if p['packets'] > 0 and pts[i + 1]['packets'] > p['packets']]
        if len(flowing) >= 2:
            total = flowing[-1]['samples'] - flowing[0]['samples']
            concealed = flowing[-1]['concealed'] - flowing[0]['concealed']
        else:
            total, concealed = 0, 0
        conceal = 100 * concealed / total if total else 100
        audio = f"{conceal:.1f}% conc"
        if dec < 0.85 * sent:
            problems.append(f"decoded {dec} of the file's {sent} frames (<85%)")
        if res != "320x240":
            problems.append(f"resolution {res}")
        if freeze not in (0, '-') and freeze > 0:
            problems.append(f"{freeze} freezes")
        if conceal >= 5:
            problems.append(f"audio concealment {conceal:.1f}% (>= 5%) of {total} samples while it flowed")
    else:
        v, vi, ai = out.get('video', {}), inb.get('video', {}), inb.get('audio', {})
        codec = (vi.get('codec') or '-').replace('video/', '')
        sent, dec = v.get('framesSent', 0), vi.get('framesDecoded', 0)
        res = f"{vi.get('frameWidth')}x{vi.get('frameHeight')}"
        freeze = vi.get('freezeCount', '-')
        audio = f"{ai.get('totalSamplesReceived', 0) // 1000}k smp"
        if not sent or dec < 0.7 * sent:
            problems.append(f"{dec} of {sent} echoed frames decoded (<70%)")
        if res != f"{v.get('frameWidth')}x{v.get('frameHeight')}":
            problems.append(f"returned {res}")
        if not ai.get('totalSamplesReceived') or ai.get('concealedSamples', 0) > 0.5 * ai.get('totalSamplesReceived', 1):
            problems.append(f"audio back: {ai.get('totalSamplesReceived')} samples, {ai.get('concealedSamples')} concealed")
    pct = f"{100 * dec / sent:.0f}" if sent else "-"
    print(fmt.format(c, codec, sent, dec, pct, res, freeze, audio, ptype, "ok" if not problems else "FAIL " + "; ".join(problems)))
    failed += bool(problems)
print(f"# {failed} case(s) failed")
sys.exit(1 if failed else 0)
EOF
