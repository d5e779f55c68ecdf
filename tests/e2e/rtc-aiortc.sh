#!/usr/bin/env bash
# Interop: our PeerConnection (ICE, DTLS, our SCTP, data channels) against aiortc (installed
# by scripts/install-test-deps.sh into tests/interop/.venv), as offerer and as answerer,
# inside a network namespace of this test's own whose only address is 10.99.0.1 on one end
# of a veth pair whose both ends are inside: nothing leaves the namespace.
#
#   tests/e2e/rtc-aiortc.sh [path/to/rtc_probe]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
probe=$(realpath "${1:-target/release/examples/rtc_probe}")
ns=plrtc$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
veth_namespace "$ns" 10.99.0.1/24
ip netns exec "$ns" timeout 120 tests/interop/.venv/bin/python tests/interop/aiortc_dc.py "$probe" 10.99.0.1
