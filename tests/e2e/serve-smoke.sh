#!/usr/bin/env bash
# `peerlink serve` as the README starts it (here on free loopback ports, HTTP set from a
# config file): it serves the browser app and metrics, coturn's turnutils_stunclient gets its
# reflexive address, and turnutils_uclient relays through it with TURN REST credentials from
# the secret given on the command line; a taken HTTP port fails before anything is announced;
# native peers give up at once on a bad signaling URL (404, unknown host) and after --wait on
# a server that is not there; SIGTERM stops it. welcome's iceServers name the host a --cert is
# for (or --public-name), and --external-ip's public address.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
status=0

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)
metrics_port=$(free_port)
cat >"$tmp/serve.toml" <<TOML
http = "127.0.0.1:0"
metrics = "127.0.0.1:$metrics_port"
max_room_peers = 4
TOML
"$peerlink" serve --config "$tmp/serve.toml" --listen 127.0.0.1:0 --auth-secret smoke-secret --allow-loopback-peers \
    --max-allocations-per-user 50 >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
serve_pid=$!
wait_for_line "$tmp/out" "turn listening on"
wait_for_line "$tmp/out" "browser app at http://"
wait_for_line "$tmp/out" "metrics at http://"
port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/out")
app=$(sed -nE 's/.*browser app at (http:\/\/[^ ]+).*/\1/p' "$tmp/out")

check_http() { # what url pattern
    # The body is read whole first: `curl | grep -q` fails under pipefail when grep stops
    # reading early and curl gets SIGPIPE.
    local body
    # shellcheck disable=SC2086
    body=$(curl -fsS $2 2>/dev/null) || body=""
    if grep -q "$3" <<<"$body"; then echo "ok   $1"; else echo "FAIL $1"; status=1; fi
}
check_http "serve serves the browser app at /" "$app" "<title>"
check_http "serve serves the app's modules" "${app}app.js" "import"
check_http "serve's metrics include signaling" "http://127.0.0.1:$metrics_port/metrics" "peerlink_signal_connections"
check_http "serve's metrics include TURN" "http://127.0.0.1:$metrics_port/metrics" "peerlink_turn_allocations"
if [ "$(curl -s -o /dev/null -w '%{http_code}' "${app}../Cargo.toml")" = 404 ] \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' "${app}nothing.js")" = 404 ]; then
    echo "ok   unknown paths are 404"
else
    echo "FAIL unknown paths"
    status=1
fi

if timeout 10 turnutils_stunclient -p "$port" -L 127.0.0.1 127.0.0.1 2>&1 | grep -q "UDP reflexive addr: 127.0.0.1:"; then
    echo "ok   serve answers STUN Binding"
else
    echo "FAIL serve did not answer STUN Binding"
    status=1
fi
timeout 60 turnutils_uclient -u smoke -W smoke-secret -p "$port" -e 127.0.0.1 -r "$peer_port" -m 2 -n 50 \
    127.0.0.1 >"$tmp/uclient.log" 2>&1 || true
if grep -aq "tot_send_msgs=100, tot_recv_msgs=100" "$tmp/uclient.log" && grep -aq "Total lost packets 0 " "$tmp/uclient.log"; then
    echo "ok   serve relays TURN with REST credentials (100 of 100 echoed)"
else
    echo "FAIL serve did not relay"
    grep -aE "tot_send_msgs|error" "$tmp/uclient.log" | tail -3
    status=1
fi
# With a certificate the app and signaling are served over HTTPS (browsers on other machines
# need a secure page for camera and microphone); SIGHUP swaps the certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=first" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
    --tls-listen 127.0.0.1:0 >"$tmp/tls.out" 2>"$tmp/tls.log" &
PIDS+=($!)
tls_pid=$!
wait_for_line "$tmp/tls.out" "browser app at https://"
secure=$(sed -nE 's/.*browser app at (https:\/\/[^ ]+).*/\1/p' "$tmp/tls.out")
check_http "serve serves the browser app over HTTPS with --cert/--key" "-k $secure" "<title>"
upgrade=$(curl -k -s -i -N --max-time 2 -H "Connection: Upgrade" -H "Upgrade: websocket" \
    -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" "${secure}ws" | head -1 || true)
if echo "$upgrade" | grep -q " 101"; then
    echo "ok   the signaling WebSocket upgrades over TLS (wss)"
else
    echo "FAIL no WebSocket upgrade over TLS: $upgrade"
    status=1
fi
host_port=${secure#https://}
host_port=${host_port%/}
subject() { openssl s_client -connect "$host_port" </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=second" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
kill -HUP "$tls_pid"
for _ in $(seq 30); do subject | grep -q second && break; sleep 0.1; done
if subject | grep -q second; then
    echo "ok   SIGHUP swaps the HTTPS certificate"
else
    echo "FAIL HTTPS still serves $(subject)"
    status=1
fi

# iceServers name the host the certificate is for (browsers check a turns: server's certificate
# against the URL's host, so an IP there fails every TURN/TLS): with --cert for example.test,
# welcome's stun:, turn: and turns: URLs say example.test, and the turns: server verifies as it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=example.test" \
    -addext "subjectAltName=DNS:example.test" -keyout "$tmp/named.key" -out "$tmp/named.pem" 2>/dev/null
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --cert "$tmp/named.pem" --key "$tmp/named.key" \
    --tls-listen 127.0.0.1:0 >"$tmp/named.out" 2>"$tmp/named.log" &
PIDS+=($!)
wait_for_line "$tmp/named.out" "browser app at https://"
named_port=$(sed -nE 's/.*browser app at https:\/\/127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/named.out")
if python3 tests/e2e/welcome.py "wss://example.test:$named_port/ws" --ca "$tmp/named.pem" --connect 127.0.0.1 \
    --check-turns >"$tmp/named.welcome" 2>&1 \
    && grep -qE '^turns:example\.test:[0-9]+\?transport=tcp$' "$tmp/named.welcome" \
    && grep -qE '^stun:example\.test:[0-9]+$' "$tmp/named.welcome" \
    && ! grep -q '127\.0\.0\.1' "$tmp/named.welcome"; then
    echo "ok   with --cert for example.test, welcome's URLs name example.test and turns: verifies ($(grep -m1 '^turns:' "$tmp/named.welcome"))"
else
    echo "FAIL welcome's iceServers with --cert for example.test:"
    cat "$tmp/named.welcome"
    status=1
fi
# --public-name wins; --external-ip PUBLIC/PRIVATE: relays on PRIVATE, browsers told PUBLIC.
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --public-name turn.example.org \
    >"$tmp/pub.out" 2>"$tmp/pub.log" &
PIDS+=($!)
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --external-ip 203.0.113.9/127.0.0.1 \
    >"$tmp/ext.out" 2>"$tmp/ext.log" &
PIDS+=($!)
wait_for_line "$tmp/pub.out" "signaling on ws://"
wait_for_line "$tmp/ext.out" "signaling on ws://"
pub_ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/pub.out")
ext_ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/ext.out")
if python3 tests/e2e/welcome.py "$pub_ws" >"$tmp/pub.welcome" 2>&1 \
    && grep -qE '^turn:turn\.example\.org:[0-9]+\?transport=udp$' "$tmp/pub.welcome"; then
    echo "ok   --public-name: welcome's URLs name it ($(grep -m1 '^turn:' "$tmp/pub.welcome"))"
else
    echo "FAIL --public-name: $(cat "$tmp/pub.welcome")"
    status=1
fi
if python3 tests/e2e/welcome.py "$ext_ws" >"$tmp/ext.welcome" 2>&1 \
    && grep -qE '^turn:203\.0\.113\.9:[0-9]+\?transport=udp$' "$tmp/ext.welcome" \
    && grep -q "relays opened on 127.0.0.1 are announced as 203.0.113.9" "$tmp/ext.out"; then
    echo "ok   --external-ip 203.0.113.9/127.0.0.1: welcome's URLs give the public address ($(grep -m1 '^turn:' "$tmp/ext.welcome"))"
else
    echo "FAIL --external-ip: $(cat "$tmp/ext.welcome" "$tmp/ext.out")"
    status=1
fi

# A taken HTTP port fails before anything is announced as listening.
taken=$(sed -nE 's/.*signaling on ws:\/\/([^/]+)\/ws.*/\1/p' "$tmp/out")
set +e
timeout 10 "$peerlink" serve --http "$taken" --listen 127.0.0.1:0 >"$tmp/taken.out" 2>"$tmp/taken.log"
rc=$?
set -e
if [ "$rc" = 1 ] && [ ! -s "$tmp/taken.out" ] && grep -q "cannot listen on $taken for HTTP" "$tmp/taken.log"; then
    echo "ok   a taken HTTP port: exit 1 before announcing anything ($(grep -m1 'cannot listen' "$tmp/taken.log"))"
else
    echo "FAIL a taken HTTP port: exit $rc, announced: $(cat "$tmp/taken.out")"
    status=1
fi

# Native peers give up at once on what retrying cannot fix, and after --wait on a server
# that is not there.
bad_server() { # label pattern url [args]
    local label=$1 pattern=$2 url=$3
    shift 3
    local t0=$SECONDS rc
    set +e
    timeout 20 "$peerlink" chat --server "$url" --room bad --bind 127.0.0.1 "$@" </dev/null >/dev/null 2>"$tmp/bad.err"
    rc=$?
    set -e
    if [ "$rc" = 1 ] && grep -qE "$pattern" "$tmp/bad.err"; then
        echo "ok   $label: exit 1 after $((SECONDS - t0)) s ($(grep -m1 -E "$pattern" "$tmp/bad.err"))"
    else
        echo "FAIL $label: exit $rc: $(tail -2 "$tmp/bad.err")"
        status=1
    fi
}
bad_server "a path that is not /ws" "404" "ws://$taken/nope"
bad_server "an unknown host" "invalid" "ws://no-such-host.invalid/ws"
bad_server "nobody listening, --wait 2" "gave up after" "ws://127.0.0.1:$(free_port)/ws" --wait 2

# Shuts down cleanly on SIGTERM.
kill -TERM "$serve_pid"
for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$serve_pid" 2>/dev/null; then
    echo "FAIL serve still running 5 s after SIGTERM"
    status=1
else
    echo "ok   serve stops on SIGTERM"
fi
exit $status
