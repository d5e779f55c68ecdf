#!/usr/bin/env bash
# SFU forwarding load, side by side: `sfu-load` (bench/src/bin/sfu-load.rs, our own native peer)
# puts PUBLISHERS publishers (VP8-shaped video in LAYERS simulcast layers, and Opus-shaped audio
# each) and SUBSCRIBERS subscribers in one room of `peerlink serve --room-mode sfu`, then the
# same load in
# one room of Janus's VideoRoom plugin (Debian `janus`, installed by
# scripts/install-test-deps.sh; driven over its WebSocket API, each publisher also subscribing
# to the others' feeds as `peerlink serve` forwards them). Both servers run in this script's
# own network namespace, one after the other; Janus from a minimal configuration written to a
# temporary directory (the VideoRoom plugin and the WebSockets transport on the namespace's
# loopback only, ICE on the namespace's address only, no STUN server). For each it prints
# forwarded packets per second and per server CPU-second (CPU from /proc/PID/stat,
# utime+stime, and from the threads' schedstat), loss and the delay from publisher to
# subscriber; then the ratios ours/Janus. Asserts nothing about speed.
#
# LAYERS (default 2): simulcast layers of each publisher's video, offered by rid as Chromium
# does (the top one VIDEO_KBPS, each lower one a fifth of the rate at a quarter of the
# picture; 1: no simulcast, one VIDEO_KBPS stream). `peerlink serve` forwards each receiver
# the layer it chooses; Janus's subscribers are configured to the top layer (`substream`), so
# the load compares. sfu-load prints what each layer sent and what the receivers got of each;
# it stops with an error when a server takes fewer layers than it offers (the loads would
# differ).
#
# The server's resident memory is read every RSS_EVERY seconds while the load runs
# (server_rss_kb_samples, VmRSS) besides its peak (server_peak_rss_kb, VmHWM).
# BASELINE=path/to/another/peerlink with `baseline` in SERVERS runs that binary too, with
# the same load in the same run (before/after a change).
#
# ROOM=N runs the room scenario instead (issue 18: N participants, each publishing video in
# LAYERS layers and receiving what the server forwards; the first SPEAKERS of them publish
# audio, the others none) against `peerlink serve --last-n LAST_N --thumbnails-above
# THUMBNAILS_ABOVE` only (defaults 3, 9, 1: each participant should get the most recent other
# speaker's video in the top layer, 8 others in the lowest, and the speakers' audio). Janus is
# left out: its VideoRoom forwards every feed a subscriber asks for, with no last-N or
# thumbnail policy of its own, so there is no same room to compare. sfu-load prints what each
# participant received and fails when it is not that room (its message says why); this
# script then prints the server's CPU share, loss, p99 delays, and RSS samples (RSS_EVERY).
#
#   bench/sfu.sh [path/to/peerlink]   # ROUNDS=1 PUBLISHERS=2 SUBSCRIBERS=6 SECONDS_=15
#                                     # VIDEO_KBPS=800 THREADS=1 SERVERS="peerlink janus"
#                                     # RSS_EVERY=5 BASELINE= LAYERS=2
#   ROOM=100 SECONDS_=30 SERVERS=peerlink bench/sfu.sh   # SPEAKERS=3 LAST_N=9
#                                     # THUMBNAILS_ABOVE=1 SETUP_TIMEOUT=300
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
ROUNDS=${ROUNDS:-1}
PUBLISHERS=${PUBLISHERS:-2}
SUBSCRIBERS=${SUBSCRIBERS:-6}
DURATION=${SECONDS_:-15}
VIDEO_KBPS=${VIDEO_KBPS:-800}
THREADS=${THREADS:-1}
SERVERS=${SERVERS:-peerlink janus}
RSS_EVERY=${RSS_EVERY:-5}
BASELINE=${BASELINE:-}
LAYERS=${LAYERS:-2}
ROOM=${ROOM:-}
SPEAKERS=${SPEAKERS:-3}
LAST_N=${LAST_N:-9}
THUMBNAILS_ABOVE=${THUMBNAILS_ABOVE:-1}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-300}
if [ -n "$ROOM" ]; then
    case " $SERVERS " in *" janus "*)
        echo "ROOM: Janus is left out (no last-N or thumbnail policy to compare)" >&2
        SERVERS=$(echo " $SERVERS " | sed 's/ janus / /g') ;;
    esac
fi
JANUS_PORT=8188

target=${CARGO_TARGET_DIR:-target}
# One build for both (as the other benches do): separate ones would unify features apart.
cargo build --release -q -p peerlink-cli -p peerlink-bench
peerlink=$(realpath "${1:-$target/release/peerlink}")
load=$(realpath "$target/release/sfu-load")

case " $SERVERS " in *" baseline "*)
    [ -x "$BASELINE" ] || { echo "baseline in SERVERS needs BASELINE=path/to/peerlink" >&2; exit 1; } ;;
esac
case " $SERVERS " in *" janus "*)
    command -v janus >/dev/null || { echo "no janus: run scripts/install-test-deps.sh" >&2; exit 1; } ;;
esac

ns=plsfuload$$
tmp=$(mktemp -d)
cleanup() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.3
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp" || true
}
trap cleanup EXIT
veth_namespace "$ns" 203.0.113.10/24
ip -n "$ns" addr add 203.0.113.1/24 dev v1
ip -n "$ns" route add default via 203.0.113.1 dev v0

# A minimal Janus configuration in DIR: only the VideoRoom plugin and the WebSockets transport
# (folders holding just those two), the API on the namespace's loopback, ICE candidates on
# ADDRESS only, no STUN server, no event handlers or loggers.
janus_config() {
    local dir=$1 address=$2 lib
    lib=$(dirname "$(dirname "$(dpkg -L janus | grep -m1 '/plugins/libjanus_videoroom\.so$')")")
    mkdir -p "$dir/plugins" "$dir/transports" "$dir/none"
    ln -sf "$lib/plugins/libjanus_videoroom.so" "$dir/plugins/"
    ln -sf "$lib/transports/libjanus_websockets.so" "$dir/transports/"
    cat >"$dir/janus.jcfg" <<EOF
general: {
    configs_folder = "$dir"
    plugins_folder = "$dir/plugins"
    transports_folder = "$dir/transports"
    events_folder = "$dir/none"
    loggers_folder = "$dir/none"
    debug_level = 4
}
media: {
    rtp_port_range = "20000-40000"
}
nat: {
    ice_enforce_list = "$address"
    ignore_mdns = true
}
EOF
    cat >"$dir/janus.transport.websockets.jcfg" <<EOF
general: {
    json = "plain"
    ws = true
    ws_port = $JANUS_PORT
    ws_ip = "127.0.0.1"
    wss = false
}
admin: {
    admin_ws = false
    admin_wss = false
}
EOF
    printf 'general: {\n}\n' >"$dir/janus.plugin.videoroom.jcfg"
}

# value KEY FILE: the value of a `key=value` line of sfu-load's output.
value() { sed -nE "s/^$1=([^ ]+).*/\1/p" "$2" | head -1; }
p99() { sed -nE "s/^delay_$1_us .*p99=([0-9]+).*/\1/p" "$2" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

for round in $(seq "$ROUNDS"); do
    for server in $SERVERS; do
        # The last server's output must not be read for this one's: the redirect below
        # happens in the child, which may run after wait_for_line has read the old file (a
        # dead server's URL, "connection refused"; or /proc/$pid/comm still the shell's).
        rm -f "$tmp/serve.out" "$tmp/serve.log"
        case $server in
        peerlink | baseline)
            binary=$peerlink
            [ "$server" = baseline ] && binary=$(realpath "$BASELINE")
            room_flags=()
            if [ -n "$ROOM" ]; then
                # A room of ROOM peers; each one's answer names every other's streams.
                room_flags=(--last-n "$LAST_N" --thumbnails-above "$THUMBNAILS_ABOVE" --max-room-peers "$ROOM"
                    --max-message-bytes 16777216)
            fi
            ip netns exec "$ns" "$binary" serve --http 127.0.0.1:0 --listen 203.0.113.10:3478 --relay-ip 203.0.113.10 \
                --allow-peer 203.0.113.0/24 --allow-loopback-peers --room-mode sfu "${room_flags[@]}" \
                >"$tmp/serve.out" 2>"$tmp/serve.log" &
            pid=$!
            wait_for_line "$tmp/serve.out" "signaling on ws://" 15
            url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
            flags=()
            ;;
        janus)
            rm -rf "$tmp/janus"
            janus_config "$tmp/janus" 203.0.113.10
            ip netns exec "$ns" janus -C "$tmp/janus/janus.jcfg" -F "$tmp/janus" -o >"$tmp/serve.out" 2>"$tmp/serve.log" &
            pid=$!
            wait_for_line "$tmp/serve.out" "WebSockets thread started" 15
            url=ws://127.0.0.1:$JANUS_PORT
            flags=(--janus)
            ;;
        *) echo "unknown server $server" >&2; exit 1 ;;
        esac
        # `ip netns exec` execs the server: $! is its process.
        comm=$server
        [ "$server" = baseline ] && comm=peerlink
        [ "$(cat /proc/$pid/comm)" = "$comm" ] || { echo "no $server process at $pid" >&2; exit 1; }
        if [ -n "$ROOM" ]; then
            echo "# round $round, $server: a room of $ROOM ($SPEAKERS speaking, last-n $LAST_N, thumbnails above $THUMBNAILS_ABOVE), ${DURATION}s, server pid $pid"
            shape=(--participants "$ROOM" --speakers "$SPEAKERS" --last-n "$LAST_N"
                --thumbnails-above "$THUMBNAILS_ABOVE" --setup-timeout "$SETUP_TIMEOUT")
        else
            echo "# round $round, $server: $PUBLISHERS publishers x $SUBSCRIBERS subscribers, ${DURATION}s, server pid $pid"
            shape=(--publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS")
        fi
        status=0
        out=$tmp/load-$round-$server.txt
        # Resident memory while the load runs (ends with the server, or with this script).
        rss_log=$tmp/rss-$round-$server.txt
        : >"$rss_log"
        (while awk '/VmRSS/ {print $2}' "/proc/$pid/status" >>"$rss_log" 2>/dev/null; do
            sleep "$RSS_EVERY"
        done) &
        sampler=$!
        # (The room's setup renegotiates with every participant as each one joins: it may
        # take minutes.)
        limit=$((DURATION + 90))
        [ -n "$ROOM" ] && limit=$((DURATION + SETUP_TIMEOUT + 60))
        timeout "$limit" ip netns exec "$ns" "$load" "${flags[@]}" --url "$url" --pid "$pid" --room "load-$round" \
            "${shape[@]}" --seconds "$DURATION" \
            --video-kbps "$VIDEO_KBPS" --layers "$LAYERS" --threads "$THREADS" --bind 203.0.113.10 \
            >"$out" 2>"$tmp/load.err" || status=$?
        cat "$out"
        grep '^note:' "$tmp/load.err" || true
        if [ $status -ne 0 ] && [ -n "$ROOM" ] && grep -q '^forwarded_packets=' "$out"; then
            # The load ran but the room differs: its numbers are printed, marked so.
            echo "# NOT THE ROOM ASKED FOR ($(grep -m1 -A3 'not what was asked' "$tmp/load.err" | tr '\n' ' '))"
        elif [ $status -ne 0 ]; then
            echo "sfu-load against $server failed (exit $status):" >&2
            tail -5 "$tmp/load.err" >&2
            tail -n 15 "$tmp/serve.log" "$tmp/serve.out" >&2
            exit 1
        fi
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        echo "server_peak_rss_kb=$rss" | tee -a "$out"
        echo "server_rss_kb_samples=$(paste -sd, "$rss_log") (every ${RSS_EVERY}s)" | tee -a "$out"
        if [ -n "$ROOM" ]; then
            echo "# round $round, room of $ROOM on $server: server_cpu_share=$(value server_cpu_share "$out") cores," \
                "generator_cpu_share=$(value generator_cpu_share "$out") cores, loss_percent=$(value loss_percent "$out")," \
                "server_kernel_share=$(value server_kernel_share "$out"), delay_video_p99_us=$(p99 video "$out") delay_audio_p99_us=$(p99 audio "$out")," \
                "room_receivers_as_asked=$(value room_receivers_as_asked "$out") of $ROOM"
        fi
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ours=$tmp/load-$round-peerlink.txt theirs=$tmp/load-$round-janus.txt
    if [ -f "$ours" ] && [ -f "$tmp/load-$round-baseline.txt" ]; then
        a=$(value server_peak_rss_kb "$ours") b=$(value server_peak_rss_kb "$tmp/load-$round-baseline.txt")
        echo "# round $round, peerlink / baseline: server_peak_rss_kb peerlink=$a baseline=$b ratio=$(ratio "$a" "$b")"
    fi
    if [ -f "$ours" ] && [ -f "$theirs" ]; then
        echo "# round $round, side by side (peerlink / janus)"
        for key in forwarded_packets forwarded_packets_per_cpu_second_stat forwarded_packets_per_cpu_second \
            server_cpu_share server_kernel_share forwarded_packets_per_kernel_cpu_second loss_percent \
            server_peak_rss_kb; do
            a=$(value "$key" "$ours") b=$(value "$key" "$theirs")
            echo "$key peerlink=$a janus=$b ratio=$(ratio "$a" "$b")"
        done
        for kind in audio video all; do
            a=$(p99 "$kind" "$ours") b=$(p99 "$kind" "$theirs")
            echo "delay_${kind}_p99_us peerlink=$a janus=$b ratio=$(ratio "$a" "$b")"
        done
    fi
done
