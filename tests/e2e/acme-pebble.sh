#!/usr/bin/env bash
# Automatic HTTPS against Debian's pebble (an ACME test CA) doing REAL validation: pebble asks
# its own DNS (pebble-challtestsrv, answering 127.0.0.1 for every name) where peerlink.test is,
# then connects to the --http port (its TLS-ALPN-01 port) or the --acme-http port (its HTTP-01
# port). Nothing runs in pebble's always-valid mode.
#   1. `serve --acme-domain peerlink.test` obtains a certificate (TLS-ALPN-01 on --http);
#      curl trusting pebble's root fetches the app over https; a WSS join gets `welcome`,
#      whose turns: URLs name peerlink.test and whose TURN-over-TLS server presents the same
#      certificate, verified for that host.
#   2. A restart with the same cache serves at once, with no new order at the CA.
#   3. A directory that is not there: a clear error in the log, HTTPS answers 503 saying why,
#      and STUN and TURN work all the same; a challenge the CA cannot complete: its reason
#      and what to check.
#   4. pebble restarted to issue 20-second certificates: one is obtained by HTTP-01 on
#      --acme-http (which sends other requests to https) and renewed while serving, without
#      a restart; the TURN-over-TLS server presents the renewed certificate too.
#   acme-pebble.sh [PEERLINK]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
status=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    status=1
}
domain=peerlink.test

# pebble's own HTTPS: a throwaway CA and a certificate for 127.0.0.1 (what --acme-ca-root trusts).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=pebble test ca" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$tmp/pebble.key" -out "$tmp/pebble.csr" 2>/dev/null
openssl x509 -req -in "$tmp/pebble.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 1 \
    -copy_extensions copy -out "$tmp/pebble.pem" 2>/dev/null

dns_port=$(free_port)
https_port=$(free_port)  # serve's --http: pebble's TLS-ALPN-01 port
http_port=$(free_port)   # serve's --acme-http: pebble's HTTP-01 port
acme_port=$(free_port)
admin_port=$(free_port)
directory="https://127.0.0.1:$acme_port/dir"
# The DNS pebble asks: A 127.0.0.1 for every name, no AAAA; its challenge servers are off.
pebble-challtestsrv -dns01 "127.0.0.1:$dns_port" -defaultIPv4 127.0.0.1 -defaultIPv6 "" -http01 "" \
    -https01 "" -tlsalpn01 "" -management "127.0.0.1:$(free_port)" >"$tmp/dns.log" 2>&1 &
PIDS+=($!)

pebble_pid=
start_pebble() { # validity-seconds label
    cat >"$tmp/pebble-$2.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme_port", "managementListenAddress": "127.0.0.1:$admin_port",
  "certificate": "$tmp/pebble.pem", "privateKey": "$tmp/pebble.key",
  "httpPort": $http_port, "tlsPort": $https_port, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "certificateValidityPeriod": $1}}
JSON
    # No random sleeps before validating, no rejected nonces, no reused authorizations: every
    # order is validated for real.
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        pebble -config "$tmp/pebble-$2.json" -dnsserver "127.0.0.1:$dns_port" >"$tmp/pebble-$2.log" 2>&1 &
    pebble_pid=$!
    PIDS+=($pebble_pid)
    wait_for_line "$tmp/pebble-$2.log" "Listening on: 127.0.0.1:$acme_port" 20
    # The root pebble issues under (made anew each start): what a browser would trust.
    curl -fsS --cacert "$tmp/ca.pem" "https://127.0.0.1:$admin_port/roots/0" >"$tmp/root-$2.pem"
}
orders() { grep -c "POST /order-plz" "$1" || true; }
stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
serve() { # label args...
    local label=$1
    shift
    "$peerlink" serve --listen 127.0.0.1:0 --acme-domain "$domain" --acme-directory "$directory" \
        --acme-ca-root "$tmp/ca.pem" --acme-email admin@peerlink.test "$@" >"$tmp/$label.out" 2>"$tmp/$label.log" &
    serve_pid=$!
    PIDS+=($serve_pid)
}
sha() { openssl x509 -outform DER | sha256sum | cut -d' ' -f1; }
served_cert() { # port
    openssl s_client -connect "127.0.0.1:$1" -servername "$domain" </dev/null 2>/dev/null | sha
}
t0=$SECONDS

# 1. The first certificate, by TLS-ALPN-01 on --http.
start_pebble 3600 long
serve first --http "127.0.0.1:$https_port" --tls-listen 127.0.0.1:0 --acme-cache "$tmp/cache"
if wait_for_line "$tmp/first.out" "acme: obtained a certificate for $domain" 60; then
    ok "a certificate for $domain from pebble by TLS-ALPN-01 on --http in $((SECONDS - t0)) s ($(grep -m1 'obtained' "$tmp/first.out" | sed 's/.*acme: //'))"
else
    fail "no certificate: $(tail -5 "$tmp/first.log")"
fi
if grep -q "challenge=TlsAlpn01" "$tmp/first.log" && grep -q "tls-alpn-01 validation handshake answered" "$tmp/first.log"; then
    ok "pebble validated by TLS-ALPN-01: it connected to --http and got the challenge certificate"
else
    fail "the log does not show the TLS-ALPN-01 validation: $(grep acme "$tmp/first.log" | tail -3)"
fi
body=$(curl -fsS --cacert "$tmp/root-long.pem" --resolve "$domain:$https_port:127.0.0.1" "https://$domain:$https_port/" 2>&1) || true
if grep -q "<title>" <<<"$body"; then
    ok "curl trusting pebble's root fetches the app from https://$domain:$https_port/"
else
    fail "curl over https: $body"
fi
if python3 tests/e2e/welcome.py "wss://$domain:$https_port/ws" --ca "$tmp/root-long.pem" --connect 127.0.0.1 \
    --check-turns >"$tmp/welcome" 2>&1; then
    https_sha=$(sed -n 's/^https-cert //p' "$tmp/welcome")
    turns_sha=$(sed -nE 's/^turns-ok [^ ]+ ([0-9a-f]+)$/\1/p' "$tmp/welcome" | head -1)
    if [ -n "$https_sha" ] && [ "$https_sha" = "$turns_sha" ] && grep -q "^turns:$domain:" "$tmp/welcome" \
        && ! grep -qE '^(stun|turn|turns):127\.' "$tmp/welcome"; then
        ok "a WSS join gets welcome; its turns: URL names $domain and TURN over TLS presents the same certificate, verified for $domain ($(grep -m1 '^turns:' "$tmp/welcome"))"
    else
        fail "welcome's URLs or TURN's certificate: $(cat "$tmp/welcome")"
    fi
else
    fail "WSS join: $(cat "$tmp/welcome")"
fi

# 2. A restart with the same cache: served at once, no new order.
orders_before=$(orders "$tmp/pebble-long.log")
stop "$serve_pid"
t1=$SECONDS
serve again --http "127.0.0.1:$https_port" --tls-listen 127.0.0.1:0 --acme-cache "$tmp/cache"
wait_for_line "$tmp/again.out" "browser app at https://" 10
if grep -q "acme: certificate for $domain from the cache" "$tmp/again.out" \
    && curl -fsS --cacert "$tmp/root-long.pem" --resolve "$domain:$https_port:127.0.0.1" \
        "https://$domain:$https_port/" 2>/dev/null | grep -q "<title>"; then
    ok "a restart with the cache serves the certificate at once ($((SECONDS - t1)) s to the first https answer)"
else
    fail "restart with the cache: $(cat "$tmp/again.out")"
fi
sleep 2
if [ "$(orders "$tmp/pebble-long.log")" = "$orders_before" ] && ! grep -q "ordering a certificate" "$tmp/again.log"; then
    ok "no new order after the restart ($orders_before order(s) at pebble in all)"
else
    fail "the restart ordered again: $(orders "$tmp/pebble-long.log") orders, was $orders_before"
fi
stop "$serve_pid"

# 3. A directory that is not there: a clear error; STUN and TURN work meanwhile.
peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)
bad_https=$(free_port)
"$peerlink" serve --http "127.0.0.1:$bad_https" --listen 127.0.0.1:0 --acme-domain "$domain" \
    --acme-directory "https://127.0.0.1:$(free_port)/dir" --acme-cache "$tmp/bad-cache" \
    --auth-secret acme-secret --allow-loopback-peers >"$tmp/bad.out" 2>"$tmp/bad.log" &
bad_pid=$!
PIDS+=($bad_pid)
wait_for_line "$tmp/bad.out" "turn listening on" 10
if wait_for_line "$tmp/bad.log" "acme: could not get a certificate" 20 \
    && grep -q "cannot reach the ACME directory" "$tmp/bad.log" && grep -q "Check the directory URL" "$tmp/bad.log"; then
    ok "a bad directory is logged with what to check: $(grep -m1 'could not get' "$tmp/bad.log" | sed 's/.*acme: //' | cut -c1-220)..."
else
    fail "no clear error for a bad directory: $(tail -3 "$tmp/bad.log")"
fi
waiting=$(curl -sk -w ' %{http_code}' "https://127.0.0.1:$bad_https/" || true)
if grep -q "no certificate for $domain yet" <<<"$waiting" && grep -q " 503$" <<<"$waiting"; then
    ok "meanwhile HTTPS answers 503 with why: $(head -1 <<<"$waiting")"
else
    fail "HTTPS without a certificate: $waiting"
fi
turn_port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/bad.out")
if timeout 10 turnutils_stunclient -p "$turn_port" -L 127.0.0.1 127.0.0.1 2>&1 | grep -q "UDP reflexive addr"; then
    ok "STUN answers while ACME fails"
else
    fail "no STUN answer while ACME fails"
fi
timeout 60 turnutils_uclient -u acme -W acme-secret -p "$turn_port" -e 127.0.0.1 -r "$peer_port" -m 1 -n 20 \
    127.0.0.1 >"$tmp/uclient.log" 2>&1 || true
last=$(grep -aoE "tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+" "$tmp/uclient.log" | tail -1)
sent=$(sed -nE 's/tot_send_msgs=([0-9]+),.*/\1/p' <<<"$last")
received=$(sed -nE 's/.*tot_recv_msgs=([0-9]+)/\1/p' <<<"$last")
if [ -n "$sent" ] && [ "$sent" -gt 0 ] && [ "$sent" = "$received" ]; then
    ok "TURN relays while ACME fails ($received of $sent echoed)"
else
    fail "TURN while ACME fails: $(grep -aE 'tot_send_msgs|error' "$tmp/uclient.log" | tail -2)"
fi
stop "$bad_pid"
# A name the CA cannot validate (nothing answers on pebble's TLS-ALPN-01 port): said so, with
# what to check.
"$peerlink" serve --http "127.0.0.1:$bad_https" --listen 127.0.0.1:0 --acme-domain "$domain" \
    --acme-directory "$directory" --acme-ca-root "$tmp/ca.pem" --acme-cache "$tmp/refused-cache" \
    >"$tmp/refused.out" 2>"$tmp/refused.log" &
refused_pid=$!
PIDS+=($refused_pid)
if wait_for_line "$tmp/refused.log" "acme: could not get a certificate" 30 \
    && grep -q "the CA could not validate" "$tmp/refused.log" \
    && grep -q "Check that the DNS A/AAAA records of $domain point at this machine" "$tmp/refused.log"; then
    ok "a failed challenge is logged with the CA's reason and what to check: $(grep -m1 'could not validate' "$tmp/refused.log" | sed 's/.*could not validate/could not validate/' | cut -c1-200)..."
else
    fail "no clear error for a failed challenge: $(tail -3 "$tmp/refused.log")"
fi
stop "$refused_pid"

# 4. Short-lived certificates: HTTP-01 on --acme-http, renewed while serving.
stop "$pebble_pid"
start_pebble 20 short
serve short --http "127.0.0.1:$https_port" --acme-http "127.0.0.1:$http_port" --tls-listen 127.0.0.1:0 \
    --acme-cache "$tmp/short-cache"
if wait_for_line "$tmp/short.out" "acme: obtained a certificate for $domain" 60; then
    ok "a 20-second certificate by HTTP-01 on --acme-http ($(grep -m1 'obtained' "$tmp/short.out" | sed 's/.*valid until/valid until/'))"
else
    fail "no short-lived certificate: $(tail -5 "$tmp/short.log")"
fi
grep -q "challenge=Http01" "$tmp/short.log" || fail "HTTP-01 was not the challenge answered: $(grep answering "$tmp/short.log")"
first_sha=$(served_cert "$https_port")
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: $domain:$http_port" \
    "http://127.0.0.1:$http_port/room/x?y=1" || true)
if [ "$redirect" = "308 https://$domain:$https_port/room/x?y=1" ]; then
    ok "--acme-http sends plain http to https ($redirect)"
else
    fail "--acme-http redirect: $redirect"
fi
if wait_for_line "$tmp/short.out" "acme: renewed a certificate for $domain" 40; then
    renewed_sha=$(served_cert "$https_port")
    turn_tls=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(tls\).*/\1/p' "$tmp/short.out")
    turn_sha=$(served_cert "$turn_tls")
    if [ "$renewed_sha" != "$first_sha" ] && [ "$turn_sha" = "$renewed_sha" ] && kill -0 "$serve_pid" 2>/dev/null; then
        ok "renewed while serving, same process; HTTPS and TURN over TLS present the new certificate"
    else
        fail "after renewal: https $renewed_sha (was $first_sha), turn $turn_sha"
    fi
    if curl -fsS --cacert "$tmp/root-short.pem" --resolve "$domain:$https_port:127.0.0.1" \
        "https://$domain:$https_port/" 2>/dev/null | grep -q "<title>"; then
        ok "the renewed certificate verifies against pebble's root"
    else
        fail "the renewed certificate does not verify"
    fi
else
    fail "no renewal: $(tail -5 "$tmp/short.log")"
fi
stop "$serve_pid"
echo "# acme-pebble: $((SECONDS - t0)) s"
exit $status
