#!/usr/bin/env bash
# Our mDNS resolver against Chromium's responder, inside a network namespace of this test's
# own (multicast never leaves it): Chromium gathers a `*.local` host candidate on
# 203.0.113.10 and `mdns_resolve` must get that address back.
#
#   tests/e2e/mdns-chromium.sh [path/to/mdns_resolve]
set -euo pipefail
cd "$(dirname "$0")/../.."
resolver=$(realpath "${1:-target/release/examples/mdns_resolve}")
ns=plmdns$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add 203.0.113.10/24 dev v0
ip -n "$ns" link set v0 up multicast on
ip -n "$ns" addr add 203.0.113.1/24 dev v1
ip -n "$ns" link set v1 up
# Chromium gathers only on the default route's interface; this route ends inside the
# namespace (no forwarding there), and multicast goes out v0.
ip -n "$ns" route add default via 203.0.113.1 dev v0
ip -n "$ns" route add 224.0.0.0/4 dev v0
ip netns exec "$ns" timeout 120 node tests/browser/mdns.mjs "$resolver" 203.0.113.10
