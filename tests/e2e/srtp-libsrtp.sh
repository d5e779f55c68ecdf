#!/usr/bin/env bash
# Differential test of peerlink-rtp's SRTP/SRTCP against libsrtp 2 (Debian libsrtp2-dev):
# builds bench/srtp-ref/srtp_ref.c with cc and runs crates/rtp/tests/libsrtp.rs against it
# (10,000 RTP and 2,000 RTCP packets per profile: same protected bytes on both sides, same
# verdicts on reordered, replayed, too-old and tampered packets, across a ROC change).
#
#   tests/e2e/srtp-libsrtp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
pkg-config --exists libsrtp2 || { echo "libsrtp2 missing: run scripts/install-test-deps.sh" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2046
cc -O2 -Wall -Werror -o "$tmp/srtp_ref" bench/srtp-ref/srtp_ref.c $(pkg-config --cflags --libs libsrtp2)
LIBSRTP_PEER="$tmp/srtp_ref" cargo test -q -p peerlink-rtp --test libsrtp -- --ignored --nocapture
