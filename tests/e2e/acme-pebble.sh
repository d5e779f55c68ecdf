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
#      a restart; the TURN-over-TLS server presents the renewed certificate too. Two TURN
#      allocations made before the renewal (coturn's uclient over UDP, and over TLS on the
#      TURN-over-TLS port, verifying pebble's chain) relay through it to the end, every
#      message echoed; the certificate expiry gauge in /metrics follows the new notAfter.
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
loopback_tls_cert "$tmp" pebble

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
served_dates() { # port: "serial=... notAfter=..."
    openssl s_client -connect "127.0.0.1:$1" -servername "$domain" </dev/null 2>/dev/null \
        | openssl x509 -noout -serial -enddate | paste -sd' '
}
expiry_metric() { # metrics port
    curl -fsS "http://127.0.0.1:$1/metrics" | sed -n 's/^peerlink_tls_certificate_expiry_timestamp_seconds //p'
}
allocations_metric() { # metrics port
    curl -fsS "http://127.0.0.1:$1/metrics" | sed -n 's/^peerlink_turn_allocations //p'
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
read -r sent received <<<"$(uclient_totals "$tmp/uclient.log")"
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

# 4. Short-lived certificates: HTTP-01 on --acme-http, renewed while serving, with TURN
# allocations (UDP, and TCP+TLS on the TURN-over-TLS port) relaying across the renewal.
stop "$pebble_pid"
start_pebble 20 short
metrics_port=$(free_port)
serve short --http "127.0.0.1:$https_port" --acme-http "127.0.0.1:$http_port" --tls-listen 127.0.0.1:0 \
    --acme-cache "$tmp/short-cache" --auth-secret acme-secret --allow-loopback-peers \
    --metrics "127.0.0.1:$metrics_port"
short_pid=$serve_pid
if wait_for_line "$tmp/short.out" "acme: obtained a certificate for $domain" 60; then
    ok "a 20-second certificate by HTTP-01 on --acme-http ($(grep -m1 'obtained' "$tmp/short.out" | sed 's/.*valid until/valid until/'))"
else
    fail "no short-lived certificate: $(tail -5 "$tmp/short.log")"
fi
grep -q "challenge=Http01" "$tmp/short.log" || fail "HTTP-01 was not the challenge answered: $(grep answering "$tmp/short.log")"
first_sha=$(served_cert "$https_port")
first_dates=$(served_dates "$https_port")
first_expiry=$(expiry_metric "$metrics_port")
turn_udp=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/short.out")
turn_tls=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(tls\).*/\1/p' "$tmp/short.out")
# Enough messages, one per 50 ms, that both allocations outlive the renewal by ~10 s: uclient
# sends no faster than -z, so a slow machine only lengthens the run.
renewal=$(grep -m1 'obtained' "$tmp/short.out" | sed -nE 's/.*renewal from (.*)$/\1/p')
span=$(($(date -d "$renewal" +%s) - $(date +%s) + 10))
[ "$span" -gt 10 ] || span=10
messages=$((span * 20))
timeout 120 turnutils_uclient -u acme -W acme-secret -p "$turn_udp" -e 127.0.0.1 -r "$peer_port" \
    -m 1 -c -n "$messages" -z 50 -l 120 127.0.0.1 >"$tmp/survive-udp.log" 2>&1 &
udp_client=$!
PIDS+=($udp_client)
timeout 120 turnutils_uclient -t -S -E "$tmp/root-short.pem" -u acme -W acme-secret -p "$turn_tls" \
    -e 127.0.0.1 -r "$peer_port" -m 1 -c -n "$messages" -z 50 -l 120 127.0.0.1 >"$tmp/survive-tls.log" 2>&1 &
tls_client=$!
PIDS+=($tls_client)
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: $domain:$http_port" \
    "http://127.0.0.1:$http_port/room/x?y=1" || true)
if [ "$redirect" = "308 https://$domain:$https_port/room/x?y=1" ]; then
    ok "--acme-http sends plain http to https ($redirect)"
else
    fail "--acme-http redirect: $redirect"
fi
sleep 2
before=$(allocations_metric "$metrics_port")
if wait_for_line "$tmp/short.out" "acme: renewed a certificate for $domain" 40; then
    # Both clients still running: their allocations were made before the renewal, and none
    # went away with it (uclient holds two per client).
    after=$(allocations_metric "$metrics_port")
    if kill -0 "$udp_client" 2>/dev/null && kill -0 "$tls_client" 2>/dev/null && [ "${before:-0}" -ge 2 ] \
        && [ "$after" = "$before" ]; then
        ok "renewed with the UDP and TLS uclients' allocations open: $before allocations in /metrics before, $after after"
    else
        fail "allocations across the renewal: ${before:-?} before, ${after:-?} after; $(tail -2 "$tmp/survive-udp.log" "$tmp/survive-tls.log")"
    fi
    renewed_sha=$(served_cert "$https_port")
    renewed_dates=$(served_dates "$https_port")
    turn_sha=$(served_cert "$turn_tls")
    if [ "$renewed_sha" != "$first_sha" ] && [ "$turn_sha" = "$renewed_sha" ] && [ "$renewed_dates" != "$first_dates" ] \
        && kill -0 "$serve_pid" 2>/dev/null; then
        ok "renewed while serving; HTTPS and TURN over TLS present the new certificate (was $first_dates, now $renewed_dates)"
    else
        fail "after renewal: https $renewed_sha $renewed_dates (was $first_sha $first_dates), turn $turn_sha"
    fi
    renewed_expiry=$(expiry_metric "$metrics_port")
    served_not_after=$(date -d "$(sed -E 's/.*notAfter=//' <<<"$renewed_dates")" +%s)
    if [ -n "$first_expiry" ] && [ "$renewed_expiry" = "$served_not_after" ] && [ "$renewed_expiry" -gt "$first_expiry" ]; then
        ok "/metrics' certificate expiry follows the renewal ($first_expiry -> $renewed_expiry, the served notAfter)"
    else
        fail "certificate expiry metric ${first_expiry:-missing} -> ${renewed_expiry:-missing}, served notAfter $served_not_after"
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
for transport in udp tls; do
    client=$udp_client
    [ "$transport" = tls ] && client=$tls_client
    wait "$client" 2>/dev/null || true
    read -r sent received <<<"$(uclient_totals "$tmp/survive-$transport.log")"
    if [ "${sent:-0}" = "$messages" ] && [ "$received" = "$sent" ]; then
        ok "the $transport allocation made before the renewal relayed to the end: $received of $sent messages echoed"
    else
        fail "the $transport allocation across the renewal: sent ${sent:-?} of $messages, echoed ${received:-?}: $(grep -aiE 'error|fail' "$tmp/survive-$transport.log" | tail -2)"
    fi
done
starts=$(grep -c "turn listening on .*(udp" "$tmp/short.out" || true)
if [ "$serve_pid" = "$short_pid" ] && kill -0 "$serve_pid" 2>/dev/null && [ "$starts" = 1 ]; then
    ok "no restart: one process (pid $serve_pid) started its listeners once"
else
    fail "serve restarted or died: pid $serve_pid, $starts listener starts"
fi
stop "$serve_pid"
echo "# acme-pebble: $((SECONDS - t0)) s"
exit $status
