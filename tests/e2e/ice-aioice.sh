#!/usr/bin/env bash
# Interop: our ICE agent against aioice (installed by scripts/install-test-deps.sh into
# tests/interop/.venv), in both roles, inside a network namespace of this test's own whose
# only address is 10.99.0.1 on one end of a veth pair whose both ends are inside: nothing
# leaves the namespace.
#
#   tests/e2e/ice-aioice.sh [path/to/ice_probe]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
probe=$(realpath "${1:-target/release/examples/ice_probe}")
ns=plice$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
veth_namespace "$ns" 10.99.0.1/24
ip netns exec "$ns" timeout 120 tests/interop/.venv/bin/python tests/interop/aioice_ice.py "$probe" 10.99.0.1
