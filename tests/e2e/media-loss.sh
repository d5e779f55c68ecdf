#!/usr/bin/env bash
# Loss repair of the native peer's media: `peerlink play` sends an 8 s VP8 + Opus file to
# headless Chromium (tests/browser/media-peer.mjs --recv) across an emulated path of 25 ms each
# way and random loss each way (default 5%, then 0% as the control), in network namespaces of
# this test's own:
#
#   A 198.51.100.10 (peerlink serve, peerlink play) -- R (router) -- B 203.0.113.20 (Chromium)
#
# R queues every forwarded packet (iptables NFQUEUE in mangle PREROUTING) to
# tests/lab/path-emulator.py, one process per direction; signaling, STUN/TURN and media all cross
# it. R has no other route and forwards only lab traffic; A and B refuse to send anywhere else
# (Chromium tries the host's DNS resolver). tests/lab/rtp-wire-count.py counts
# in R, before the loss, what each side put on the wire (RTP by SSRC and payload type, so our
# RTX retransmissions; and every other packet by destination: none may be addressed outside).
#
# The path is checked before its figures are trusted: ping across it must show the RTT
# (2 x DELAY_MS, within 45-65 ms by default), and each emulator's own counters must show a loss
# rate within 4 standard deviations (+0.5%) of the one asked for.
# With loss: Chromium decodes >= 80% of the file's frames with at most 2 freezes, plus one for each
# repair the path undid (a NACK Chromium sent that play did not receive, or an RTX packet play sent
# that Chromium did not; never more than the emulators' logs of what they dropped show: RTX A>B,
# RTCP B>A), sends NACKs, receives retransmissions (retransmittedPacketsReceived), and RTX packets
# from our peer are seen on the wire. The control (0%) must decode >= 80% with at most 2 freezes too.
# The case `first` has no random loss; R drops the stream's first video packet (the start of its
# first key frame, which Chromium cannot NACK: it never learnt that sequence number). Chromium asks
# for a key frame, and play, which has no encoder, sends the last key frame and the frames since
# again: Chromium must decode >= 95% of the frames (waiting for the file's next key frame loses a
# second of them) with at most 2 freezes, send no NACK (it never knew of the packet), and receive
# what play logs it sent again.
# Prints one table; exits non-zero if a case or a path check fails.
#
#   tests/e2e/media-loss.sh [path/to/peerlink]
#   LOSSES="0.05 0 first"  loss fractions (or `first`), one case each   DELAY_MS=25  one-way delay
#   SEED=N           the emulators' loss seeds (N and N+1; printed)   KEEP=DIR  keep every file
#   NOISE=N          add ffmpeg's noise filter (strength N) to the video: the plain test pattern
#                    encodes to ~140 kbit/s, about one packet a frame; NOISE=30 fills the 400 kbit/s
# Needs root, Chromium and playwright-core, iptables, and NetfilterQueue in tests/interop/.venv
# (scripts/install-test-deps.sh installs them). Takes about 30 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
py=${PYTHON:-tests/interop/.venv/bin/python}
LOSSES=${LOSSES:-"0.05 0 first"}
DELAY_MS=${DELAY_MS:-25}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
NOISE=${NOISE:-0}
CLIP=8
FPS=15
tmp=$(mktemp -d)
P=plml$$ TMP=$tmp PY=$py
. scripts/lib/path-lab.sh
cleanup() {
    path_lab_down
    if [ -n "${KEEP:-}" ]; then cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$tmp" || true
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"

# The input: 8 s of 320x240 VP8 at 15 fps, a key frame every second; Opus audio.
ff() { ffmpeg -v error -y "$@" </dev/null; }
vf=()
[ "$NOISE" != 0 ] && vf=(-vf "noise=alls=$NOISE:allf=t")
ff -f lavfi -i "testsrc=size=320x240:rate=$FPS" -t $CLIP "${vf[@]}" -c:v libvpx -b:v 400k -g $FPS -deadline realtime "$tmp/in.ivf"
ff -f lavfi -i "sine=frequency=440:sample_rate=48000" -t $CLIP -c:a libopus -b:a 48k "$tmp/in.ogg"
frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$tmp/in.ivf")
echo "# input: $frames video frames ($CLIP s VP8 320x240 at $FPS fps, noise $NOISE, $(($(stat -c %s "$tmp/in.ivf") * 8 / CLIP / 1000)) kbit/s) + Opus"

# The topology (scripts/lib/path-lab.sh).
path_lab_topology
# Nothing but lab addresses on the wire: Chromium's DNS queries (to the host's resolver) and
# anything else addressed outside are refused where they start, and R forwards only lab traffic.
for l in "$A a0" "$B b0"; do
    set -- $l
    ip netns exec "$1" iptables -A OUTPUT -o "$2" -d 198.51.100.0/24 -j ACCEPT
    ip netns exec "$1" iptables -A OUTPUT -o "$2" -d 203.0.113.0/24 -j ACCEPT
    ip netns exec "$1" iptables -A OUTPUT -o "$2" -j REJECT
done

ip netns exec "$A" "$peerlink" serve --http 198.51.100.10:0 --listen 198.51.100.10:3478 --relay-ip 198.51.100.10 \
    --allow-peer 203.0.113.0/24 --messages-per-second 200 >"$tmp/serve.out" 2>"$tmp/serve.log" &
wait_for_line "$tmp/serve.out" "signaling on ws://" 15
ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
echo "# signaling $ws in $A; Chromium in $B; path emulators in $R: ${DELAY_MS} ms each way, seeds $SEED/$((SEED + 1))"

i=0
for loss in $LOSSES; do
    i=$((i + 1))
    c="$tmp/c$i"
    room=loss$i
    rate=$loss
    [ "$loss" = first ] && rate=0
    epids=()
    for q in 0 1; do
        ip netns exec "$R" "$py" tests/lab/path-emulator.py --queue $q --delay-ms "$DELAY_MS" --loss "$rate" \
            --seed $((SEED + q)) --secs 90 --stats "$c.emu$q.json" --lost-log "$c.emu$q.lost" >"$c.emu$q.out" 2>&1 &
        epids+=($!)
    done
    for _ in $(seq 50); do queues_bound && break; sleep 0.1; done
    queues_bound || { echo "path emulators did not bind their queues:" >&2; cat "$c".emu*.out >&2; exit 1; }
    ip netns exec "$A" ping -q -n -c 40 -i 0.05 -W 1 203.0.113.20 >"$c.ping" 2>&1 || true
    if [ "$loss" = first ]; then
        # The first RTP packet (first byte 10xxxxxx) of payload type 96 (play's VP8; the
        # marker bit masked) from A, of 600 bytes or more (a key frame's), once.
        first_rule=(FORWARD -p udp -s 198.51.100.10 -m length --length 600:1500 -m u32 --u32 "28&0xC07F0000=0x80600000"
            -m statistic --mode nth --every 100000000 --packet 0 -m comment --comment media-loss-first -j DROP)
        ip netns exec "$R" iptables -I "${first_rule[@]}"
    fi
    ip netns exec "$R" "$py" tests/lab/rtp-wire-count.py --secs 60 --out "$c.wire.json" ra rb 2>"$c.wire.err" &
    wpid=$!
    rc_n=0 rc_c=0
    timeout -s INT 45 ip netns exec "$A" env RUST_LOG=debug "$peerlink" play "$tmp/in.ivf" "$tmp/in.ogg" \
        --server "$ws" --room "$room" --name play --bind 198.51.100.10 >"$c.play.out" 2>"$c.play.err" &
    pn=$!
    wait_for_line "$c.play.err" "joined room" 20 || true
    timeout 60 ip netns exec "$B" node tests/browser/media-peer.mjs --server "$ws" --room "$room" --name chr \
        --recv --duration $((CLIP + 1)) --timeout 30 >"$c.chr.json" 2>"$c.chr.err" || rc_c=$?
    wait "$pn" || rc_n=$?
    kill -TERM "$wpid" "${epids[@]}" 2>/dev/null || true
    wait "$wpid" "${epids[@]}" 2>/dev/null || true
    dropped=-
    if [ "$loss" = first ]; then
        dropped=$(ip netns exec "$R" iptables -L FORWARD -v -n -x | awk '/media-loss-first/ {print $1}')
        dropped=${dropped:-?}
        ip netns exec "$R" iptables -D "${first_rule[@]}" || true
    fi
    echo "$i $loss $rc_n $rc_c $dropped" >>"$tmp/cases"
    [ -s "$c.wire.json" ] || cat "$c.wire.err" >&2
done

python3 - "$tmp" "$frames" "$DELAY_MS" <<'EOF'
import json, math, re, sys
tmp, frames, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def load(path):
    try:
        with open(path) as f:
            return json.loads(f.readline())
    except Exception:
        return {}
def text(path):
    try:
        return open(path).read()
    except Exception:
        return ""
def tail(path, n=3):
    return " / ".join(text(path).strip().splitlines()[-n:])
rows, failed = [], 0
for line in open(f"{tmp}/cases"):
    i, name, rc_n, rc_c, dropped = line.split()
    first = name == "first"
    loss, c = (0.0 if first else float(name)), f"{tmp}/c{i}"
    problems = []
    # The path: ping's RTT and loss, the emulators' own loss counts.
    ping = text(f"{c}.ping")
    m = re.search(r"= [\d.]+/([\d.]+)/", ping)
    rtt = float(m.group(1)) if m else None
    m = re.search(r"([\d.]+)% packet loss", ping)
    ping_loss = m.group(1) if m else "-"
    if rtt is None or not (2 * delay - 5 <= rtt <= 2 * delay + 15):
        problems.append(f"ping RTT {rtt} ms, want about {2 * delay:.0f}: {tail(c + '.ping', 2)}")
    emu = []
    for q, way in ((0, "A>B"), (1, "B>A")):
        e = load(f"{c}.emu{q}.json")
        n, d = e.get("pkts_in", 0), e.get("loss_drops", 0)
        rate = d / n if n else 0.0
        band = 4 * math.sqrt(loss * (1 - loss) / n) + 0.005 if n else 0
        emu.append(f"{way} {100 * rate:.1f}% of {n}")
        if not n:
            problems.append(f"emulator {way} saw no packets ({tail(c + f'.emu{q}.out')})")
        elif abs(rate - loss) > band:
            problems.append(f"emulator {way} lost {100 * rate:.2f}% of {n}, asked {100 * loss:g}% (band ±{100 * band:.1f}%)")
        if e.get("sched") != "fifo":
            emu[-1] += f" ({e.get('sched')} priority)"
    # Chromium's side.
    d = load(f"{c}.chr.json")
    peer = (d.get("peers") or [{}])[0]
    inb = {o["kind"]: o for o in peer.get("inbound", [])}
    v, a = inb.get("video", {}), inb.get("audio", {})
    if rc_c != "0":
        problems.append(f"chromium exited {rc_c}: {tail(c + '.chr.err')}")
    if rc_n != "0":
        problems.append(f"peerlink play exited {rc_n}: {tail(c + '.play.err')}")
    dec, freeze = v.get("framesDecoded", 0), v.get("freezeCount")
    media_ssrcs = {str(o.get("ssrc")) for o in inb.values()}
    nack, pli, lost = v.get("nackCount"), v.get("pliCount"), v.get("packetsLost")
    rtx_recv = v.get("retransmittedPacketsReceived")
    # Our side: what play says, and what it put on the wire before the loss (in R, on ra).
    err = text(f"{c}.play.err")
    m = re.search(r"sent (\d+) frames", err)
    sent = int(m.group(1)) if m else None
    kf_asked = err.count("key frame asked for")
    wire = load(f"{c}.wire.json")
    rtp_a = (wire.get("ra") or {}).get("rtp", {})
    rtx_wire = sum(e["packets"] for k, e in rtp_a.items() if k.split("/")[0] not in media_ssrcs)
    rtx_pad = sum(e["padding"] for k, e in rtp_a.items() if k.split("/")[0] not in media_ssrcs)
    video_wire = sum(e["packets"] for k, e in rtp_a.items() if k.split("/")[0] == str(v.get("ssrc")))
    lab = ("198.51.100.", "203.0.113.")
    strays = {k: n for ifc in wire.values() for k, n in ifc.get("other", {}).items() if not k.split(" ")[1].startswith(lab)}
    if not wire:
        problems.append(f"no wire counts: {tail(c + '.wire.err')}")
    if strays:
        problems.append(f"packets to outside addresses reached the router: {strays}")
    if dec < 0.8 * frames:
        problems.append(f"decoded {dec} of the file's {frames} frames (<80%)")
    if first:
        if dropped != "1":
            problems.append(f"R dropped {dropped} first video packets, not 1")
        # Chromium never knew the dropped packet (no NACK); play sent it again.
        if nack:
            problems.append(f"Chromium sent {nack} NACKs: the packet dropped was not the stream's first")
        if "key frame asked for: the last one sent again" not in err or not rtx_recv:
            problems.append("play did not send the key frame again (or Chromium did not receive it)")
        if dec < 0.95 * frames:
            problems.append(f"decoded {dec} of the file's {frames} frames (<95%) after losing the first key frame's start")
    # A repair the path itself undoes (Chromium's NACK lost on the way back, or our retransmission
    # lost on the way there) costs Chromium another round trip after its own wait, ~230 ms late at
    # 15 fps: a freeze by its definition (> 3 frame intervals and > 150 ms over one) that no sender
    # can prevent. Each such loss may add one freeze; the sender gets 2 more. The two peers' own
    # counters say how many were lost: NACK packets Chromium sent and play received, RTX packets
    # play sent and Chromium received. (Chromium sends some NACKs in a compound after a receiver
    # report, where SRTCP hides them from the emulators' logs.)
    def ours(key):
        m = re.search(rf"stats chr video .*?\b{key}=(\d+)", err)
        return int(m.group(1)) if m else None
    nacks_in, rtx_out, too_soon = ours("nacks_received"), ours("rtx_sent"), ours("rtx_too_soon")
    resent = ours("keyframe_resends") or 0
    # Never more than the emulators say they dropped: RTX (RTP of another SSRC than the
    # media's) A>B, RTCP of any type B>A (a NACK may follow a report in a compound).
    def drops(q):
        return [l.split()[1:] for l in text(f"{c}.emu{q}.lost").splitlines()]
    path_rtx = sum(1 for d in drops(0) if len(d) == 3 and d[0] == "rtp" and d[2] not in media_ssrcs)
    path_rtcp = sum(1 for d in drops(1) if d and d[0] == "rtcp")
    lost_nack = min(max(0, (nack or 0) - nacks_in), path_rtcp) if nacks_in is not None else 0
    lost_rtx = min(max(0, rtx_out + resent - rtx_recv), path_rtx) if rtx_out is not None and rtx_recv is not None else 0
    freeze_bound = 2 + lost_nack + lost_rtx
    if freeze is None or freeze > freeze_bound:
        problems.append(f"freezeCount {freeze} (> {freeze_bound}: 2 + {lost_nack} NACK + {lost_rtx} RTX packets lost)")
    if loss > 0:
        if not nack:
            problems.append("Chromium sent no NACK")
        if rtx_recv is not None and not rtx_recv:
            problems.append("Chromium received no retransmission")
        if not rtx_wire:
            problems.append("no RTX packet from peerlink on the wire")
    m = re.findall(r"selected pair: (\S+) -> (\S+)", err)  # the last: Chromium may nominate again
    pair = f"{m[-1][0]}>{m[-1][1]}" if m else "-"
    cp = peer.get("pair") or {}
    cpair = f"{(cp.get('local') or {}).get('type', '-')}>{(cp.get('remote') or {}).get('type', '-')}"
    relayed = (wire.get("ra") or {}).get("relayed", 0)
    failed += bool(problems)
    rows.append(dict(loss="first" if first else f"{100 * loss:g}%", rtt=f"{rtt:.1f}" if rtt is not None else "-", ping_loss=f"{ping_loss}%",
        emu=", ".join(emu), frames=frames, sent=sent if sent is not None else "-", dec=dec,
        pct=f"{100 * dec / frames:.0f}", freeze=f"{freeze}/{v.get('totalFreezesDuration', 0):.1f}s" if freeze is not None else "-",
        nack=nack, pli=pli, lost=lost, rtx_recv=rtx_recv if rtx_recv is not None else "n/a",
        kfd=v.get("keyFramesDecoded"), alost=a.get("packetsLost"),
        wire=f"{video_wire}/{rtx_wire}({rtx_pad}p)", rep=f"{lost_nack}/{lost_rtx}", soon=too_soon if too_soon is not None else "-", kf=kf_asked, pair=f"{pair} {cpair}" + (f" relayed:{relayed}" if relayed else ""),
        result="ok" if not problems else "FAIL " + "; ".join(problems)))
cols = [("loss", "loss"), ("rtt", "rttMs"), ("ping_loss", "pingLoss"), ("frames", "file"), ("sent", "sentAV"),
        ("dec", "decoded"), ("pct", "%"), ("freeze", "freeze"), ("nack", "nack"), ("pli", "pli"), ("lost", "lost"),
        ("rtx_recv", "rtxRecv"), ("kfd", "keyDec"), ("alost", "aLost"), ("wire", "wireVid/Rtx"), ("rep", "lostNack/Rtx"), ("soon", "tooSoon"), ("kf", "kfAsked"), ("pair", "pair(ours chromium's)")]
w = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in cols}
print(" ".join(h.rjust(w[k]) for k, h in cols), " result")
for r in rows:
    print(" ".join(str(r[k]).rjust(w[k]) for k, _ in cols), "", r["result"])
for r in rows:
    print(f"# {r['loss']}: emulator loss applied {r['emu']}")
print("# first: no random loss; R dropped the first video packet (the start of the first key frame) once")
print("# rttMs/pingLoss: ping across the path (40 probes); file: frames in the file; sentAV: `peerlink play`'s count")
print("# of audio + video frames sent;")
print("# decoded/freeze(count/total)/nack/pli/lost/rtxRecv/keyDec: Chromium's inbound video (aLost: audio packetsLost);")
print("# wireVid/Rtx: RTP packets peerlink put on the wire before the loss, media SSRC / others (RTX; p: P-bit padding);")
print("# lostNack/Rtx: NACK packets Chromium sent that play did not get, RTX packets play sent that Chromium did not")
print("# (at most what the emulators logged dropping: RTCP B>A, RTX A>B);")
print("# each may cost one freeze beyond the 2 allowed (c*.emu*.lost in KEEP: what the emulators dropped, by RTP/RTCP type);")
print("# tooSoon: NACKed packets play did not resend, asked again within an RTT of the last;")
print("# kfAsked: play's 'key frame asked for' log lines (RUST_LOG=debug): Chromium's PLI/FIR as our peer saw them;")
print("# pair: the selected pair (local>remote type) as play logs it last and as Chromium reports it; relayed: packets")
print("# A>B in TURN ChannelData (media through our TURN server although a direct path exists).")
print(f"# {failed} case(s) failed")
sys.exit(1 if failed else 0)
EOF
