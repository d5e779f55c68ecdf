#!/usr/bin/env bash
# Builds `peerlink` and runs `peerlink serve` with its embedded defaults (extra arguments go
# to `serve`). On a fresh Debian machine with the Rust toolchain it first installs what the
# build needs beyond Rust: OpenSSL's headers (the native peer's DTLS) and pkg-config.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "serve.sh: the build needs ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}' or run this as root" >&2
        exit 1
    fi
    echo "serve.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exec cargo run --release -p peerlink-cli -- serve "$@"
