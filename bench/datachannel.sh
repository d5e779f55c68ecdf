#!/usr/bin/env bash
# Data channels: reliable ordered throughput between two processes of the same stack over
# real UDP (DTLS encrypted), for our stack (target/release/dc-bench; with UDP GSO/GRO and
# without), libdatachannel
# (node-datachannel), str0m (bench/dc-ref-str0m, a workspace of its own built here) and
# aiortc, same machine, same run, inside a network namespace of this script's own (the
# reference stacks gather host candidates on every interface). Prints MB/s (the receiver's
# first byte to last) and CPU-seconds per MB of both processes, the medians, and our ratios
# to the fastest other stack. Asserts nothing about speed.
#
#   bench/datachannel.sh                  # 3 rounds; 100 MB (20 MB for aiortc)
#   ROUNDS=5 BYTES=$((300<<20)) bench/datachannel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
ROUNDS=${ROUNDS:-3}
BYTES=${BYTES:-$((100 << 20))}
SLOW_BYTES=${SLOW_BYTES:-$((20 << 20))}
MESSAGE=65536

cargo build --release -q -p peerlink-cli -p peerlink-bench --bin dc-bench
CARGO_TARGET_DIR=$PWD/target cargo build --release -q --manifest-path bench/dc-ref-str0m/Cargo.toml
[ -d bench/dc-ref/node_modules/node-datachannel ] ||
    (cd bench/dc-ref && npm install --no-audit --no-fund --silent)
python=tests/interop/.venv/bin/python
[ -x "$python" ] && "$python" -c 'import aiortc' || { echo "aiortc missing: run scripts/install-test-deps.sh" >&2; exit 1; }

ns=pldcb$$
tmp=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"' EXIT
veth_namespace "$ns" 10.99.0.1/24

run() { # name bytes sender... -- receiver...
    local name=$1 bytes=$2
    shift 2
    for round in $(seq "$ROUNDS"); do
        if ip netns exec "$ns" timeout 200 python3 bench/dc_run.py "$bytes" "$@" >"$tmp/out" 2>"$tmp/err"; then
            echo "$name $(cat "$tmp/out")" | tee -a "$tmp/results"
        else
            echo "$name round $round FAILED: $(cat "$tmp/out") $(tail -3 "$tmp/err")"
        fi
    done
}

dcb=target/release/dc-bench
run peerlink "$BYTES" -- $dcb send --bind 10.99.0.1:0 --bytes "$BYTES" --message $MESSAGE \
    -- $dcb recv --bind 10.99.0.1:0 --bytes "$BYTES" --message $MESSAGE
# The same without UDP segmentation/receive offload: one system call per datagram, as the
# other stacks do.
run peerlink-no-gso "$BYTES" -- $dcb send --no-offload --bind 10.99.0.1:0 --bytes "$BYTES" --message $MESSAGE \
    -- $dcb recv --no-offload --bind 10.99.0.1:0 --bytes "$BYTES" --message $MESSAGE
run libdatachannel "$BYTES" -- node bench/dc-ref/ldc-peer.mjs send "$BYTES" $MESSAGE \
    -- node bench/dc-ref/ldc-peer.mjs recv "$BYTES" $MESSAGE
s0m=target/release/dc-ref-str0m
run str0m "$BYTES" -- $s0m send "$BYTES" $MESSAGE --bind 10.99.0.1 \
    -- $s0m recv "$BYTES" $MESSAGE --bind 10.99.0.1
run aiortc "$SLOW_BYTES" -- "$python" bench/dc-ref/aiortc_peer.py send "$SLOW_BYTES" $MESSAGE \
    -- "$python" bench/dc-ref/aiortc_peer.py recv "$SLOW_BYTES" $MESSAGE

python3 - "$tmp/results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, data = line.split(" ", 1)
    rows.setdefault(name, []).append(json.loads(data))
print()
print(f"{'stack':<16}{'MB/s (median)':>16}{'CPU-s per MB':>16}{'runs':>6}")
med = {}
for name, rs in rows.items():
    med[name] = (statistics.median(r["mb_per_s"] for r in rs), statistics.median(r["cpu_s_per_mb"] for r in rs))
    print(f"{name:<16}{med[name][0]:>16.1f}{med[name][1]:>16.4f}{len(rs):>6}")
others = {k: v for k, v in med.items() if not k.startswith("peerlink")}
if others:
    best = max(others, key=lambda k: others[k][0])
    print()
    for name in (k for k in med if k.startswith("peerlink")):
        ours = med[name]
        print(f"{name} / {best} (fastest other): {ours[0] / others[best][0]:.2f}x throughput, "
              f"{others[best][1] / ours[1]:.2f}x less CPU per MB")
PY
