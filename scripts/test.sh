#!/usr/bin/env bash
# Every test suite, from a fresh Debian machine with the Rust toolchain:
#   install test dependencies, fmt, clippy, cargo test, end-to-end against third-party
#   peers, short fuzz runs, and the side-by-side benchmarks (which print numbers and
#   assert nothing about speed).
#
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
#   BENCH=0          skip the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (at %d s)\n' "$*" "$SECONDS"; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings

step "cargo test --workspace (doctests included)"
cargo test --workspace

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q

step "RTP/RTCP/SRTP: RFC 3711 and RFC 7714 vectors, then a differential test against libsrtp 2"
cargo test -q -p peerlink-rtp --lib -- rfc
tests/e2e/srtp-libsrtp.sh

step "DTLS + SCTP + data channels in netsim: 100 MB at 0, 2 and 10% loss (release)"
cargo test --release -q -p peerlink-sctp --test stack -- --ignored --nocapture

step "SCTP congestion control in netsim: goodput, queueing, fairness on P1-P3 paths (release)"
cargo test --release -q -p peerlink-sctp --test congestion -- --ignored --nocapture

step "release build"
# Each invocation selects peerlink-cli so every shared crate gets the features the CLI needs
# (a crate built for one package alone gets fewer, and a third of the tree compiles again);
# the second adds tokio's test-util, a dev-dependency of the peerlink and signal examples.
# The benchmarks' own `cargo build -p peerlink-cli -p peerlink-bench` then finds it all built.
cargo build --release -q -p peerlink-cli -p peerlink-bench -p peerlink-server -p peerlink-ice -p peerlink-rtc \
    --bins --example turn_probe --example ice_probe --example mdns_resolve --example rtc_probe
cargo build --release -q -p peerlink-cli -p peerlink-signal -p peerlink --features peerlink-signal/client --examples

step "the peerlink crate's examples: own signaling, sans-IO, echo and chat through peerlink serve"
tests/e2e/library-examples.sh target/release/peerlink target/release/examples
step "peerlink echo against headless Chromium and aiortc: 1,000 mixed messages back in order"
tests/e2e/echo-peers.sh target/release/peerlink

step "end-to-end: coturn's turnutils_stunclient against peerlink stun"
tests/e2e/stun-stunclient.sh target/release/peerlink

step "end-to-end: coturn's turnutils_uclient and turnutils_peer against peerlink turn"
tests/e2e/turn-uclient.sh target/release/peerlink
step "end-to-end: turnutils_uclient's transports (UDP, TCP, TLS, RFC 6062 TCP relays) against peerlink turn with one relay thread"
RELAY_THREADS=1 MESSAGES=50 SUBSET=transports tests/e2e/turn-uclient.sh target/release/peerlink

step "TURN on a host with two IPv6 addresses: answers and relayed data leave from the one asked (namespace)"
tests/e2e/turn-ipv6-source.sh target/release/peerlink

step "TURN memory and scale: 2,000 allocations with channels, refreshed, relaying, then under 50 abusive clients (RSS flat, nothing lost)"
tests/e2e/turn-soak.sh target/release/peerlink target/release/turn-soak

step "end-to-end: peerlink serve (STUN and TURN on one port, REST credentials, SIGTERM)"
tests/e2e/serve-smoke.sh target/release/peerlink

step "end-to-end: automatic HTTPS from Debian's pebble ACME CA with real validation (TLS-ALPN-01, HTTP-01, cache, renewal, a bad directory)"
tests/e2e/acme-pebble.sh target/release/peerlink
step "end-to-end: an ACME CA answering rateLimited with Retry-After (a fake directory): logged, waited, retried; STUN/TURN unaffected"
tests/e2e/acme-ratelimit.sh target/release/peerlink

step "deployment: the Debian package (cargo deb) installed with dpkg, its systemd unit (systemd-analyze verify), serve from it"
tests/e2e/package-deb.sh target/release/peerlink
step "deployment: every metric the Grafana dashboard queries is in a running server's /metrics"
tests/e2e/dashboard-metrics.sh target/release/peerlink

step "end-to-end: our TURN client against coturn's turnserver"
tests/e2e/turn-client-coturn.sh target/release/examples/turn_probe

step "end-to-end: headless Chromium relays a data channel through peerlink turn"
tests/e2e/turn-chromium.sh target/release/peerlink

step "interop: our ICE agent against aioice, both roles, in a network namespace"
tests/e2e/ice-aioice.sh target/release/examples/ice_probe
step "ICE behind real Linux NATs (namespaces, nftables): srflx pair, relayed pair through peerlink turn"
tests/e2e/ice-natlab.sh target/release/peerlink target/release/examples/ice_probe
step "peerlink send / recv behind real Linux NATs: srflx pair, relayed pair"
tests/e2e/peer-natlab.sh target/release/peerlink
step "interop: our PeerConnection (ICE, DTLS, SCTP, data channels) against aiortc, as offerer and answerer"
tests/e2e/rtc-aiortc.sh target/release/examples/rtc_probe
step "end-to-end: peerlink chat with peerlink chat through peerlink serve"
tests/e2e/chat-cli.sh target/release/peerlink
step "end-to-end: peerlink send to peerlink recv (50 MB, no overwrite, interrupted sender)"
tests/e2e/transfer-cli.sh target/release/peerlink
step "peerlink send -> recv, libdatachannel and Chromium through emulated paths (40 ms / 50 Mbit/s, 0% and 1% loss, each congestion controller; 150 ms / 20 Mbit/s / 0.5% loss, BBR) (path checked with ping and iperf3)"
tests/e2e/transfer-path.sh target/release/peerlink
step "interop: the browser app in headless Chromium with peerlink chat, recv and send (50 MB each way; namespace)"
tests/e2e/chat-browser.sh target/release/peerlink
step "interop: the browser app WITH its camera on and peerlink recv, 50x per join order (renegotiation during set-up; namespace)"
ITER=${CAMERA_ITER:-50} tests/e2e/camera-browser.sh target/release/peerlink
step "interop: our mDNS resolver gets a Chromium *.local host candidate's address (namespace)"
tests/e2e/mdns-chromium.sh target/release/examples/mdns_resolve

step "end-to-end: two peerlink serve processes share rooms through redis-server"
tests/e2e/signal-redis.sh target/release/peerlink target/release/examples/signal_probe

step "end-to-end: the browser app in headless Chromium (video, chat, 20 MB file; direct and relay-only)"
tests/e2e/web-chromium.sh target/release/peerlink
step "end-to-end: a call in the browser app goes on through a restart of peerlink serve (same ids, video and chat)"
tests/e2e/web-restart.sh target/release/peerlink
step "media: the Chromium test peer against Chromium (VP8, H.264; it judges the native peer)"
CASES="vp8:answer h264-baseline:offer" tests/e2e/media-chromium-selftest.sh target/release/peerlink
step "media: peerlink record, play and echo against headless Chromium (VP8, VP9, H.264, AV1, Opus; relay-only once)"
tests/e2e/media-chromium.sh target/release/peerlink
step "media: peerlink record and play against aiortc (VP8, H.264, Opus; both join orders)"
tests/e2e/media-aiortc.sh target/release/peerlink
step "media: play -> Chromium behind 5% loss and 50 ms RTT (path emulator): NACK and RTX repair; a lost first key frame resent"
tests/e2e/media-loss.sh target/release/peerlink
step "media: the browser app shows a peerlink play peer's video and audio, and a peerlink record peer"
tests/e2e/web-media.sh target/release/peerlink
step "SFU: 4 Chromium pages in a --room-mode sfu room decode each other over one connection each"
tests/e2e/sfu-chromium.sh target/release/peerlink
step "SFU: last-N and thumbnails: 4 Chromium pages get the videos the speaker order names, in the right layers"
SCENARIO=lastn tests/e2e/sfu-chromium.sh target/release/peerlink
step "SFU: a Chromium receiver behind a path cut to 0.3 Mbit/s: low layer within 2 s, no freeze over 500 ms, top layer back within 10 s"
tests/e2e/sfu-ratelimit.sh target/release/peerlink
step "SFU: native peers (play, record, chat) in an SFU room with a Chromium page"
tests/e2e/sfu-native.sh target/release/peerlink
step "SFU: the browser app in an SFU room (4 pages, one connection each, chat through the server); auto mode: a mesh of 3, 2 join (to the server), 2 leave (a mesh), no tile frozen over 1 s at a switch"
# (--mesh-max 3 for the auto case: with 4, six pages of one headless browser saturate this
# 2-core machine; MESH_MAX=4 runs that.)
MESH_MAX=3 CASES="sfu auto" tests/e2e/web-sfu.sh target/release/peerlink
step "interop matrix: Firefox, libdatachannel, werift, Pion x both roles x direct/relay-only against peerlink chat; Firefox <-> Chromium in the browser app (3 runs); Firefox, Pion and werift media with echo/record/play (1 run)"
RUNS=${INTEROP_RUNS:-3} MEDIA_RUNS=${INTEROP_MEDIA_RUNS:-1} tests/e2e/interop-matrix.sh target/release/peerlink

fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" -gt 0 ]; then
    # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
    for target in $(cd fuzz && cargo fuzz list); do
        step "fuzz $target for ${fuzz_seconds}s"
        log=$(mktemp)
        if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" -- \
            -max_total_time="$fuzz_seconds" -rss_limit_mb=2048) >"$log" 2>&1; then
            tail -40 "$log" >&2
            echo "fuzz $target failed; the input that crashed it is in fuzz/artifacts/$target" >&2
            exit 1
        fi
        grep -E '^Done' "$log"
        rm -f "$log"
    done
fi

if [ "${BENCH:-1}" != 0 ]; then
    step "benchmark: STUN Binding, peerlink vs coturn"
    ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} bench/stun.sh
    step "benchmark: TURN relaying, peerlink vs coturn, under turnutils_uclient"
    # coturn's CPU time varies from run to run: three rounds give a median (TURN_ROUNDS=5 for a
    # steadier one; each round costs about 70 s).
    ROUNDS=${TURN_ROUNDS:-3} bench/turn.sh
    step "benchmark: signaling, peerlink serve vs a Node.js ws signaling server"
    ROUNDS=${SIGNAL_ROUNDS:-1} bench/signal.sh
    step "benchmark: data channel throughput, peerlink vs libdatachannel vs aiortc"
    ROUNDS=${DC_ROUNDS:-2} bench/datachannel.sh
    step "benchmark: data channel goodput through emulated long, lossy paths, peerlink (BBR, RFC 9260) vs libdatachannel"
    ROUNDS=${DC_PATH_ROUNDS:-1} bench/datachannel-path.sh
    step "benchmark: the native peer (set-up time, send -> recv) vs Chromium and aiortc"
    bench/peer.sh
    step "benchmark: SRTP protect/unprotect per packet, peerlink-rtp vs libsrtp 2"
    ROUNDS=${SRTP_ROUNDS:-5} bench/srtp.sh
    step "benchmark: media receive path per packet (SRTP, jitter buffer, VP8), peerlink vs Pion"
    ROUNDS=${MEDIA_ROUNDS:-5} bench/media.sh
    step "benchmark: SFU forwarding, peerlink serve vs Janus VideoRoom (2 publishers x 6 subscribers, 2 simulcast layers + audio)"
    ROUNDS=${SFU_ROUNDS:-2} bench/sfu.sh
fi

step "all suites passed"
