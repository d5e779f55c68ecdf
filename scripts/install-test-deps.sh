#!/usr/bin/env bash
# Installs what the test suites need, idempotently, on Debian with the Rust toolchain:
#   coturn (turnutils_* and turnserver: third-party STUN/TURN clients and the benchmark
#   reference), Debian's Chromium driven by playwright-core from npm (never a downloaded
#   browser), Node.js if missing, redis-server (the multi-node signaling test), nftables
#   (the NAT lab), OpenSSL's headers and tool (DTLS), a Python venv with aioice and aiortc (interop, benchmark), node-datachannel (benchmark), rustfmt and clippy, and
#   cargo-fuzz; for the path emulator (tests/lab/path-emulator.py): iptables, ping, iperf3,
#   libnetfilter-queue's headers and NetfilterQueue in that venv; Go and Debian's Pion
#   libraries (the media benchmark's reference, the interop matrix's Pion peer); Firefox ESR,
#   puppeteer-core, werift and node-datachannel (the interop matrix); pebble (the ACME test CA),
#   cargo-deb (the Debian package).
set -euo pipefail

need_apt=()
command -v turnutils_stunclient >/dev/null && command -v turnserver >/dev/null || need_apt+=(coturn)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v chromium >/dev/null || need_apt+=(chromium chromium-driver)
# Firefox ESR: the second browser engine of the interop matrix (tests/e2e/interop-matrix.sh).
command -v firefox-esr >/dev/null || need_apt+=(firefox-esr)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v nft >/dev/null || need_apt+=(nftables)
# The DTLS crate links OpenSSL (openssl-sys finds it with pkg-config); its tests also run the
# `openssl` command-line tool as a peer.
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v ss >/dev/null || need_apt+=(iproute2)
# libsrtp 2 and a C compiler: the SRTP differential test and benchmark build a small C program
# against it (bench/srtp-ref/srtp_ref.c); the Rust crates never link it.
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
pkg-config --exists libsrtp2 2>/dev/null || need_apt+=(libsrtp2-dev)
# ffmpeg: makes the media test inputs and judges recordings (-xerror decode, ffprobe).
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
# Go and Pion's libraries (Debian's, built offline in GOPATH mode with GO111MODULE=off): the
# media benchmark's reference receive path (bench/media-ref) and the interop matrix's Pion peer
# (tests/interop/pion-peer, which also uses golang.org/x/net/websocket from the same tree).
command -v go >/dev/null || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/pion/webrtc ] || need_apt+=(golang-github-pion-webrtc.v3-dev)
[ -d /usr/share/gocode/src/golang.org/x/net/websocket ] || need_apt+=(golang-golang-x-net-dev)
# The path emulator (NFQUEUE in userspace; the kernel has no netem) needs the library's headers to
# build its Python binding.
pkg-config --exists libnetfilter_queue 2>/dev/null || need_apt+=(libnetfilter-queue-dev)
# ... and iptables' NFQUEUE target to feed it (this kernel has no nftables `queue` statement).
command -v iptables >/dev/null || need_apt+=(iptables)
# pebble (Let's Encrypt's ACME test CA, with pebble-challtestsrv as its DNS): automatic HTTPS is
# tested against it doing real validation (tests/e2e/acme-pebble.sh).
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || need_apt+=(pebble)
# ping checks an emulated path's RTT before a test trusts it, iperf3 its rate and loss.
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
# Janus (its VideoRoom plugin and WebSockets transport): the SFU benchmark's reference server
# (bench/sfu.sh runs it from a configuration of its own).
command -v janus >/dev/null || need_apt+=(janus)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The coturn, redis and janus packages may start system services; the tests start their own.
for service in coturn redis-server janus; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done

if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# playwright-core only drives a browser; it never downloads one.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$here/tests/browser/node_modules/playwright-core" ]; then
    echo "installing playwright-core for the browser tests"
    (cd "$here/tests/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi

# aioice and aiortc (ICE and WebRTC implementations we did not write) for the interop tests
# and the data-channel benchmark, in a venv of the project's own; pinned so every run tests
# against the same peers.
venv_python="$here/tests/interop/.venv/bin/python"
if [ ! -x "$venv_python" ] || ! "$venv_python" -c 'import aioice, aiortc' 2>/dev/null; then
    echo "installing aioice and aiortc into tests/interop/.venv"
    python3 -m venv "$here/tests/interop/.venv"
    "$here/tests/interop/.venv/bin/pip" install -q aioice==0.13.0 aiortc==1.16.0
fi
if ! "$venv_python" -c 'import netfilterqueue' 2>/dev/null; then
    echo "installing NetfilterQueue into tests/interop/.venv (the path emulator)"
    "$here/tests/interop/.venv/bin/pip" install -q NetfilterQueue==1.1.0
fi

# libdatachannel (through node-datachannel, whose package carries the native library) as a
# reference peer for the data-channel benchmark.
if [ ! -d "$here/bench/dc-ref/node_modules/node-datachannel" ]; then
    echo "installing node-datachannel for the benchmark"
    (cd "$here/bench/dc-ref" && npm install --no-audit --no-fund --silent)
fi

# The interop matrix's third-party peers (tests/interop/package.json): puppeteer-core to drive
# Debian's Firefox over WebDriver BiDi (it must never download a browser of its own), werift
# and node-datachannel.
for pkg in puppeteer-core werift node-datachannel ws; do
    if [ ! -d "$here/tests/interop/node_modules/$pkg" ]; then
        echo "installing the interop matrix's peers into tests/interop/node_modules"
        (cd "$here/tests/interop" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --no-package-lock --silent)
        break
    fi
done

# cargo-deb makes the Debian package (tests/e2e/package-deb.sh); dpkg-deb and systemd-analyze
# check it.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb"
    cargo install --locked -q cargo-deb
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked -q cargo-fuzz
fi
