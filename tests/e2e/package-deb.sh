#!/usr/bin/env bash
# The Debian package and its systemd unit, as the README's "Deploy on a server" uses them:
#   - `cargo deb` packs the release binary, the unit, a commented /etc/peerlink/peerlink.toml
#     (a conffile) and the Grafana dashboard;
#   - installed with dpkg (as root): `peerlink --version` runs, `systemd-analyze verify`
#     accepts the installed unit (where systemd-analyze exists), and the unit asks for what
#     the README promises (DynamicUser, CAP_NET_BIND_SERVICE only, StateDirectory,
#     ProtectSystem=strict, reload by SIGHUP);
#   - `peerlink serve` with the shipped file unchanged says what to set; with acme_domain set
#     as the README's sed does it (and loopback addresses over the file's), it serves: TURN
#     listens, HTTPS answers (503 while the test CA is absent), the ACME cache is made under
#     $STATE_DIRECTORY as the unit would have it.
# The package is removed again if this script installed it.
#   package-deb.sh [PEERLINK]   (PEERLINK: the release binary the package is made of)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
built=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
installed_here=0
cleanup() {
    kill_all
    if [ "$installed_here" = 1 ]; then dpkg --purge peerlink >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
status=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    status=1
}

[ -x "$built" ] || { echo "FAIL no release binary at $built"; exit 1; }
t0=$SECONDS
cargo deb -p peerlink-cli --no-build --fast -o "$tmp/" >"$tmp/deb.log" 2>&1 || { cat "$tmp/deb.log"; exit 1; }
deb=$(ls "$tmp"/peerlink_*.deb)
dpkg-deb -c "$deb" >"$tmp/contents"
unit_path=$(sed -nE 's|.* \./((usr/)?lib/systemd/system/peerlink\.service)$|/\1|p' "$tmp/contents")
if grep -q ' ./usr/bin/peerlink$' "$tmp/contents" && grep -q ' ./etc/peerlink/peerlink.toml$' "$tmp/contents" \
    && [ -n "$unit_path" ] && grep -q 'grafana-dashboard.json$' "$tmp/contents" \
    && dpkg-deb -I "$deb" conffiles | grep -q '^/etc/peerlink/peerlink.toml$'; then
    ok "cargo deb made $(basename "$deb") in $((SECONDS - t0)) s: /usr/bin/peerlink, $unit_path, /etc/peerlink/peerlink.toml (a conffile), the dashboard"
else
    fail "the package lacks files: $(cat "$tmp/contents")"
fi

if [ "$(id -u)" != 0 ]; then
    echo "skip installing the package: not root"
    exit $status
fi
if dpkg -s peerlink >/dev/null 2>&1; then
    echo "FAIL a peerlink package is already installed; not touching it"
    exit 1
fi
dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
installed_here=1
version=$(/usr/bin/peerlink --version)
if [ "$version" = "peerlink $(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)" ]; then
    ok "installed with dpkg; /usr/bin/peerlink --version: $version"
else
    fail "peerlink --version: $version"
fi
if systemctl is-enabled peerlink >/dev/null 2>&1; then
    fail "the unit is enabled before the configuration names the server"
else
    ok "the unit is installed but not enabled (the configuration must name the server first)"
fi
if command -v systemd-analyze >/dev/null; then
    if systemd-analyze verify "$unit_path" >"$tmp/verify.log" 2>&1; then
        ok "systemd-analyze verify $unit_path"
    else
        fail "systemd-analyze verify: $(cat "$tmp/verify.log")"
    fi
else
    echo "skip systemd-analyze: not on this machine"
fi
missing=
for line in "DynamicUser=yes" "AmbientCapabilities=CAP_NET_BIND_SERVICE" "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" \
    "StateDirectory=peerlink" "ProtectSystem=strict" 'ExecReload=/bin/kill -HUP $MAINPID' \
    "ExecStart=/usr/bin/peerlink serve --config /etc/peerlink/peerlink.toml"; do
    grep -qxF "$line" "$unit_path" || missing="$missing $line"
done
[ -z "$missing" ] && ok "the unit: DynamicUser, CAP_NET_BIND_SERVICE only, StateDirectory, ProtectSystem=strict, reload by SIGHUP" \
    || fail "the unit lacks:$missing"

# The shipped configuration as it is: a clear word on what to set.
set +e
timeout 10 /usr/bin/peerlink serve --config /etc/peerlink/peerlink.toml >"$tmp/unset.out" 2>"$tmp/unset.log"
rc=$?
set -e
if [ "$rc" = 1 ] && grep -q 'acme_domain = \["NAME"\]' "$tmp/unset.log"; then
    ok "the shipped configuration unchanged: exit 1 with what to set ($(grep -m1 error "$tmp/unset.log" | cut -c1-160)...)"
else
    fail "the shipped configuration unchanged: exit $rc: $(cat "$tmp/unset.log")"
fi

# The README's second command on a copy, then serve as the unit would (STATE_DIRECTORY), on
# loopback ports and with a CA that is not there (nothing leaves this machine).
cp /etc/peerlink/peerlink.toml "$tmp/peerlink.toml"
sed -i 's/^acme_domain = \[\]/acme_domain = ["peerlink.test"]/' "$tmp/peerlink.toml"
STATE_DIRECTORY="$tmp/state" /usr/bin/peerlink serve --config "$tmp/peerlink.toml" --http 127.0.0.1:0 \
    --acme-http 127.0.0.1:0 --listen 127.0.0.1:0 --acme-directory "https://127.0.0.1:$(free_port)/dir" \
    >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
if wait_for_line "$tmp/serve.out" "browser app at https://" 15 && grep -q "turn listening on" "$tmp/serve.out"; then
    app=$(sed -nE 's/.*browser app at (https:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
    answer=$(curl -sk -w ' %{http_code}' "$app" || true)
    if grep -q " 503$" <<<"$answer" && grep -q "no certificate for peerlink.test yet" <<<"$answer" \
        && [ -d "$tmp/state/acme" ]; then
        ok "serve from the package with acme_domain set: TURN listens, HTTPS answers ($(head -1 <<<"$answer" | cut -c1-90)...), ACME cache in \$STATE_DIRECTORY/acme"
    else
        fail "serve from the package: $answer; state: $(ls -R "$tmp/state" 2>&1)"
    fi
else
    fail "serve from the package did not start: $(tail -3 "$tmp/serve.log")"
fi
exit $status
