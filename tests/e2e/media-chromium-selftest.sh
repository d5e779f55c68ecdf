#!/usr/bin/env bash
# Self-test of tests/browser/media-peer.mjs, the Chromium media peer that judges the native
# `peerlink play|record|echo`: Chromium against Chromium through `peerlink serve`. For each video
# codec (vp8, vp9, h264 baseline, main and high, av1; those this Chromium cannot both send and
# receive, by `media-peer.mjs --list-codecs`, are reported SKIP: Debian's 156 has no H.264 High) one peer sends
# fake camera video and microphone audio with --codec, the other receives and plays (--recv), in
# both join orders (the sender answering is the case where Chromium ignores its codec
# preferences: media-peer pins the sender with setParameters), then once relay-only on both
# sides through the server's TURN. Checks: both peers exit 0, the video is sent and received in
# the wanted codec (and H.264 profile), the receiver decoded >= 70% of the frames the sender
# sent, the received resolution is the sent one, audio samples arrive; relay-only: the
# selected pair is relay/relay. Prints a table.
#
# Everything runs in a network namespace of this test's own (a veth pair whose ends both stay
# inside, the default route pointing at it: Chromium gathers no candidates without one), so no
# packet leaves the machine; Chromium's only ICE servers are the ones the welcome hands out.
#
#   tests/e2e/media-chromium-selftest.sh [path/to/peerlink]
#   DURATION=5        seconds the sender stays connected (the receiver one more)
#   CASES="vp8:answer h264-high:offer ..."   a subset (codec[-profile]:sender-role[:relay])
#   KEEP=DIR          keep every peer's JSON and stderr in DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=$(realpath "${1:-target/release/peerlink}")
DURATION=${DURATION:-5}
CASES=${CASES:-"vp8:answer vp8:offer vp9:answer vp9:offer h264-baseline:answer h264-baseline:offer \
h264-main:answer h264-main:offer h264-high:answer h264-high:offer av1:answer av1:offer vp8:answer:relay \
h264-baseline:offer:relay"}
ns=plmedia$$
tmp=$(mktemp -d)
trap 'ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$tmp"/. "$KEEP"/ 2>/dev/null || true; rm -rf "$tmp" || true' EXIT
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP"
media_lab "$ns" "$peerlink" "$tmp"

peer() { # name room args... ; runs media-peer in the namespace, bounded
    local n=$1 room=$2
    shift 2
    timeout 60 ip netns exec "$ns" node tests/browser/media-peer.mjs --server "$ws" --room "$room" --name "$n" "$@" \
        >"$tmp/$room.$n.json" 2>"$tmp/$room.$n.err"
}

usable=$(timeout 60 node tests/browser/media-peer.mjs --list-codecs)
usable=$(sed -nE 's/^\{"usable":\[([^]]*)\].*/\1/p' <<<"$usable" | tr -d '"' | tr , ' ')
echo "# this Chromium sends and receives: $usable"

status=0
i=0
for c in $CASES; do
    i=$((i + 1))
    IFS=: read -r spec role relay <<<"$c"
    if ! grep -qw -- "$spec" <<<"$usable"; then
        echo "$c snd=skip rcv=skip" >>"$tmp/cases"
        continue
    fi
    codec=${spec%%-*}
    args=(--codec "$codec")
    [ "$codec" = h264 ] && args+=(--h264-profile "${spec#h264-}")
    [ "$relay" = relay ] && args+=(--relay)
    room=c$i
    sargs=(--send video,audio "${args[@]}" --duration "$DURATION")
    rargs=(--recv --duration $((DURATION + 1)))
    [ "$relay" = relay ] && rargs+=(--relay)
    # The first in the room answers the newcomer's offer.
    if [ "$role" = answer ]; then
        first=(snd "${sargs[@]}"); second=(rcv "${rargs[@]}")
    else
        first=(rcv "${rargs[@]}"); second=(snd "${sargs[@]}")
    fi
    rc1=0; rc2=0
    peer "${first[0]}" "$room" "${first[@]:1}" &
    p1=$!
    wait_for_line "$tmp/$room.${first[0]}.err" "joined as|FAIL" 20 || true
    peer "${second[0]}" "$room" "${second[@]:1}" || rc2=$?
    wait "$p1" || rc1=$?
    echo "$c ${first[0]}=$rc1 ${second[0]}=$rc2" >>"$tmp/cases"
done

# The table and the verdicts, from the JSON lines.
python3 - "$tmp" "$CASES" <<'EOF' || status=1
import json, sys
tmp, cases = sys.argv[1], sys.argv[2].split()
rcs = {}
for line in open(f"{tmp}/cases"):
    c, *rest = line.split()
    rcs[c] = dict(x.split('=') for x in rest)
def load(room, n):
    try:
        with open(f"{tmp}/{room}.{n}.json") as f:
            return json.loads(f.readline())
    except Exception:
        return None
def err_tail(room, n):
    try:
        return open(f"{tmp}/{room}.{n}.err").read().strip().splitlines()[-3:]
    except Exception:
        return []
fmt = "{:<26} {:<20} {:>5} {:>7} {:>5} {:>9} {:>9} {:>6} {:>8} {:<11} {}"
print(fmt.format("case", "codec sent", "sent", "decoded", "%", "sent res", "recv res", "freeze", "audio", "pair", "result"))
failed = 0
for i, c in enumerate(cases, 1):
    room = f"c{i}"
    spec, role, *relay = c.split(':')
    s, r = load(room, 'snd'), load(room, 'rcv')
    rc = rcs.get(c, {})
    problems = []
    if rc.get('snd') in ('skip', '3'):
        print(fmt.format(c, "-", "", "", "", "", "", "", "", "", "SKIP (this Chromium cannot send and receive it)"))
        continue
    for who in ('snd', 'rcv'):
        if rc.get(who) != '0':
            problems.append(f"{who} exited {rc.get(who)}: {' / '.join(err_tail(room, who))}")
    so = next((o for p in (s or {}).get('peers', []) for o in p['outbound'] if o['kind'] == 'video'), {})
    ri = next((o for p in (r or {}).get('peers', []) for o in p['inbound'] if o['kind'] == 'video'), {})
    ra = next((o for p in (r or {}).get('peers', []) for o in p['inbound'] if o['kind'] == 'audio'), {})
    check = next((p.get('codecCheck') for p in (s or {}).get('peers', [])), None) or {}
    sent, dec = so.get('framesSent', 0), ri.get('framesDecoded', 0)
    pct = 100 * dec / sent if sent else 0
    fmtp = so.get('fmtp') or ''
    prof = next((x.split('=')[1] for x in fmtp.split(';') if x.startswith('profile-level-id')), '')
    codec = f"{(so.get('codec') or '-').replace('video/', '')} {prof}".strip() + (" pinned" if check.get('forced') else "")
    sres = f"{so.get('frameWidth', 0)}x{so.get('frameHeight', 0)}"
    rres = f"{ri.get('frameWidth', 0)}x{ri.get('frameHeight', 0)}"
    spair = next((p.get('pair') for p in (s or {}).get('peers', [])), None) or {}
    rpair = next((p.get('pair') for p in (r or {}).get('peers', [])), None) or {}
    ptype = lambda p: f"{(p.get('local') or {}).get('type', '-')}/{(p.get('remote') or {}).get('type', '-')}"
    if s and r:
        if check.get('ok') is not True:
            problems.append(f"sent {so.get('codec')} {fmtp}, wanted {(check.get('wanted') or {}).get('codec')}")
        if (ri.get('codec') or '').lower() != (so.get('codec') or '-').lower():
            problems.append(f"received {ri.get('codec')}")
        if not sent or dec < 0.7 * sent:
            problems.append(f"decoded {dec} of {sent} frames (<70%)")
        if sres != rres or sres == '0x0':
            problems.append(f"resolution sent {sres}, received {rres}")
        if not ra.get('totalSamplesReceived'):
            problems.append("no audio samples received")
        if relay and (ptype(spair) != 'relay/relay' or ptype(rpair) != 'relay/relay'):
            problems.append(f"pairs {ptype(spair)} and {ptype(rpair)}, not relay/relay")
    audio = f"{ra.get('totalSamplesReceived', 0) // 1000}k"
    print(fmt.format(c, codec, sent, dec, f"{pct:.0f}", sres, rres, ri.get('freezeCount', '-'), audio,
                     ptype(rpair), "ok" if not problems else "FAIL " + "; ".join(problems)))
    failed += bool(problems)
print(f"# {failed} of {len(cases)} cases failed")
sys.exit(1 if failed else 0)
EOF
exit $status
