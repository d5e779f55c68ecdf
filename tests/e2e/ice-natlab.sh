#!/usr/bin/env bash
# Our ICE agent behind real Linux NATs: tests/lab/nat-topo.sh builds two clients behind two
# nftables NATs in namespaces of this test's own, `peerlink turn` (STUN and TURN) runs on the
# public side, and two ice_probe agents connect and send data both ways:
#   - port-preserving NATs on both sides: a srflx -> srflx pair;
#   - a symmetric NAT on one side, then on both: a pair through the TURN relay.
#
#   tests/e2e/ice-natlab.sh [path/to/peerlink] [path/to/ice_probe]
set -euo pipefail
cd "$(dirname "$0")/../.."
peerlink=$(realpath "${1:-target/release/peerlink}")
probe=$(realpath "${2:-target/release/examples/ice_probe}")
prefix="pl$$-"
turn_pid=""
cleanup() {
    [ -n "$turn_pid" ] && kill "$turn_pid" 2>/dev/null && wait "$turn_pid" 2>/dev/null
    tests/lab/nat-topo.sh down "$prefix"
}
trap cleanup EXIT

failed=0
run_case() { # NAT1_MODE NAT2_MODE EXPECT
    NAT1_MODE=$1 NAT2_MODE=$2 tests/lab/nat-topo.sh up "$prefix"
    ip netns exec "${prefix}pub" "$peerlink" turn --listen 203.0.113.100:3478 --user lab:lab-password \
        --relay-ports 50000-50999 >"/tmp/natlab-turn.$$.log" 2>&1 &
    turn_pid=$!
    for _ in $(seq 50); do
        ip netns exec "${prefix}pub" ss -lun | grep -q 203.0.113.100:3478 && break
        sleep 0.1
    done
    echo "== NATs $1 / $2: expecting $3"
    if ! python3 tests/e2e/natlab_pair.py "$probe" "$prefix" "$3" \
        --stun 203.0.113.100:3478 --turn 203.0.113.100:3478 lab lab-password; then
        failed=1
        tail -20 "/tmp/natlab-turn.$$.log"
    fi
    kill "$turn_pid"; wait "$turn_pid" 2>/dev/null || true
    turn_pid=""
    rm -f "/tmp/natlab-turn.$$.log"
}

run_case pc pc srflx
run_case pc sym relay
run_case sym pc relay
run_case sym sym relay
if [ "$failed" = 0 ]; then echo "ICE NAT lab: all cases passed"; else echo "ICE NAT lab: FAILED"; exit 1; fi
