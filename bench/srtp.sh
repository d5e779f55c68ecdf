#!/usr/bin/env bash
# SRTP per-packet cost: peerlink-rtp (crates/rtp/examples/srtp_bench.rs, release) next to
# libsrtp 2 (Debian libsrtp2, through bench/srtp-ref/srtp_ref.c built here with cc), same
# machine, same run, same packets: protect and unprotect of RTP packets of 100 and 1,200
# bytes with AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM. Prints ns/packet (the median of
# ROUNDS runs) and the ratios. Asserts nothing about speed.
#
#   bench/srtp.sh                  # 5 rounds
#   ROUNDS=9 bench/srtp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
pkg-config --exists libsrtp2 || { echo "libsrtp2 missing: run scripts/install-test-deps.sh" >&2; exit 1; }

cargo build --release -q -p peerlink-rtp --example srtp_bench
ours=${CARGO_TARGET_DIR:-target}/release/examples/srtp_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2046
cc -O2 -Wall -Werror -o "$tmp/srtp_ref" bench/srtp-ref/srtp_ref.c $(pkg-config --cflags --libs libsrtp2)

for round in $(seq "$ROUNDS"); do
    for profile in 1 7; do
        for size in 100 1200; do
            # Enough packets for tens of milliseconds of work each.
            count=$([ "$size" = 100 ] && echo 200000 || echo 50000)
            echo "peerlink $profile $size $("$ours" "$profile" "$size" "$count")" >>"$tmp/results"
            echo "libsrtp $profile $size $("$tmp/srtp_ref" bench "$profile" "$size" "$count")" >>"$tmp/results"
        done
    done
done

python3 - "$tmp/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    impl, profile, size, *kv = line.split()
    for item in kv:
        key, value = item.split("=")
        runs.setdefault((impl, profile, int(size), key), []).append(float(value))
med = {k: statistics.median(v) for k, v in runs.items()}
names = {"1": "AES_CM_128_HMAC_SHA1_80", "7": "AEAD_AES_128_GCM"}
print(f"{'profile':<24} {'size':>5} {'op':<10} {'peerlink ns':>12} {'libsrtp ns':>11} {'libsrtp/peerlink':>17}")
for profile in ("1", "7"):
    for size in (100, 1200):
        for op in ("protect", "unprotect"):
            ours, theirs = med[("peerlink", profile, size, op + "_ns")], med[("libsrtp", profile, size, op + "_ns")]
            print(f"{names[profile]:<24} {size:>5} {op:<10} {ours:>12.1f} {theirs:>11.1f} {theirs / ours:>16.2f}x")
print()
for size in (100, 1200):
    for op in ("protect", "unprotect"):
        cm, gcm = med[("peerlink", "1", size, op + "_ns")], med[("peerlink", "7", size, op + "_ns")]
        print(f"peerlink GCM-128 vs CM-80, {size:>4} bytes, {op:<9}: {cm / gcm:.2f}x faster")
PY
