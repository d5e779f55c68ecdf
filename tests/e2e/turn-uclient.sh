#!/usr/bin/env bash
# coturn's turnutils_uclient and turnutils_peer (clients we did not write) against
# `peerlink turn`: UDP, TCP and TLS client transport, channels and Send indications, a static
# user and a TURN REST secret, and RFC 6062 TCP relays (-T: clients connect to each other's
# relayed address through Connect, ConnectionAttempt and ConnectionBind, over TCP and TLS
# control connections). Every message must come back echoed, none lost. A certificate
# reload (SIGHUP) in the middle of a TLS session loses nothing and serves the new
# certificate. Then the refusals: wrong password, and a loopback peer without
# --allow-loopback-peers (403).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
# RELAY_THREADS=N runs the servers with N relay threads (default: one per core).
# SUBSET=transports runs only one echo run per client transport (UDP, TCP, TLS, RFC 6062 TCP
# relays over TCP and TLS): the short check of another relay-thread count.
SUBSET=${SUBSET:-all}
case $SUBSET in all | transports) ;; *) echo "SUBSET must be all or transports, not '$SUBSET'" >&2; exit 2 ;; esac
MESSAGES=${MESSAGES:-200}
CLIENTS=${CLIENTS:-4}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
passed=0
failures=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failures=$((failures + 1)); }

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)
peer6_port=$(free_port)
turnutils_peer -L ::1 -p "$peer6_port" >"$tmp/peer6.log" 2>&1 &
PIDS+=($!)

start_turn() { # name, extra args... Sets TURN_PORT and TURN_PID (not in a subshell: PIDS must see it).
    local name=$1
    shift
    "$peerlink" turn --listen 127.0.0.1:0 --relay-ip 127.0.0.1 --realm example.test \
        --user test:secret --auth-secret restsecret ${RELAY_THREADS:+--relay-threads "$RELAY_THREADS"} "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.log" &
    TURN_PID=$!
    PIDS+=("$TURN_PID")
    wait_for_line "$tmp/$name.out" "turn listening on"
    TURN_PORT=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/$name.out")
}

cert() { # name: a self-signed P-256 certificate and key
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=$1" \
        -keyout "$tmp/$1.key" -out "$tmp/$1.crt" 2>/dev/null
}
cert first
cert second
cp "$tmp/first.crt" "$tmp/live.crt"
cp "$tmp/first.key" "$tmp/live.key"
start_turn main --relay-ip ::1 --allow-loopback-peers --max-allocations-per-user 200 --metrics 127.0.0.1:0 --cert "$tmp/live.crt" --key "$tmp/live.key" \
    --tls-listen 127.0.0.1:0
port=$TURN_PORT
main_pid=$TURN_PID
metrics_url=$(sed -nE 's/.*metrics at (http:[^ ]+).*/\1/p' "$tmp/main.out")
tls_port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(tls\).*/\1/p' "$tmp/main.out")
sleep 0.2

# uclient prints "start_mclient: tot_send_msgs=N, tot_recv_msgs=M" and "Total lost packets N".
echo_run() { # label, uclient flags... (TARGET_PORT overrides the server port, LENGTH the message size)
    local label=$1
    shift
    local expected=$((MESSAGES * CLIENTS)) log="$tmp/uclient.log" sent received lost
    timeout 120 turnutils_uclient "$@" -p "${TARGET_PORT:-$port}" -e "${PEER_IP:-127.0.0.1}" \
        -r "${PEER_PORT:-$peer_port}" -m "$CLIENTS" \
        -n "$MESSAGES" -l "${LENGTH:-180}" 127.0.0.1 >"$log" 2>&1 || true
    cp "$log" "${KEEP_LOGS:-/dev/null}" 2>/dev/null || true
    sent=$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+).*/\1/p' "$log" | tail -1)
    received=$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+).*/\2/p' "$log" | tail -1)
    lost=$(sed -nE 's/.*Total lost packets ([0-9]+).*/\1/p' "$log" | tail -1)
    if [ "$sent" = "$expected" ] && [ "$received" = "$expected" ] && [ "$lost" = 0 ]; then
        pass "$label: $received of $expected echoed, 0 lost"
    else
        fail "$label: sent=${sent:-?} received=${received:-?} lost=${lost:-?} (expected $expected)"
        grep -aiE "error|fail" "$log" | grep -v "handshake failure" | head -5; tail -3 "$log"
    fi
}

if [ "$SUBSET" = transports ]; then
    echo_run "udp, channels, static user" -u test -w secret
    echo_run "tcp, send indications, static user" -t -s -u test -w secret
    TARGET_PORT=$tls_port echo_run "tls, channels, static user" -t -S -u test -w secret
    echo_run "tcp relay (RFC 6062), client to client, static user" -T -u test -w secret
    TARGET_PORT=$tls_port echo_run "tcp relay (RFC 6062) over tls control and data connections" -T -S -u test -w secret
    if [ -n "${RELAY_THREADS:-}" ]; then
        if grep -q "turn server listening.* threads=$RELAY_THREADS\b" "$tmp/main.log"; then
            pass "the server ran $RELAY_THREADS relay thread(s)"
        else
            fail "the server's log does not say threads=$RELAY_THREADS"
            grep "turn server listening" "$tmp/main.log" || true
        fi
    fi
    echo "turn-uclient (${RELAY_THREADS:-default} relay threads, transports only): $passed passed, $failures failed"
    [ "$failures" -eq 0 ]
    exit
fi
echo_run "udp, channels, static user" -u test -w secret
echo_run "udp, send indications, static user" -s -u test -w secret
echo_run "tcp, channels, static user" -t -u test -w secret
echo_run "tcp, send indications, static user" -t -s -u test -w secret
echo_run "udp, channels, REST secret" -u alice -W restsecret
echo_run "tcp, send indications, REST secret" -t -s -u alice -W restsecret
echo_run "udp, channel padding (-D), dont-fragment (-g)" -D -g -u test -w secret
PEER_IP=::1 PEER_PORT=$peer6_port echo_run "udp, IPv6 relay (-x) to an IPv6 peer" -x -u test -w secret
PEER_IP=::1 PEER_PORT=$peer6_port echo_run "tcp, IPv6 relay (-x), send indications" -x -t -s -u test -w secret
PEER_IP=::1 PEER_PORT=$peer6_port echo_run "udp, dual allocation (-Z, RFC 8656 §7.2)" -Z -u test -w secret
TARGET_PORT=$tls_port echo_run "tls, channels, static user" -t -S -u test -w secret
TARGET_PORT=$tls_port echo_run "tls, send indications, REST secret" -t -S -s -u alice -W restsecret
# RFC 6062: -T relays over TCP between uclient's own clients (-e/-r are ignored): each client
# allocates a TCP relay, Connects to the others' relayed addresses, and binds data connections.
echo_run "tcp relay (RFC 6062), client to client, static user" -T -u test -w secret
LENGTH=1000 echo_run "tcp relay (RFC 6062), REST secret, 1000-byte messages" -T -u alice -W restsecret
TARGET_PORT=$tls_port echo_run "tcp relay (RFC 6062) over tls control and data connections" -T -S -u test -w secret

# The RFC 6062 data connections carried every byte, both ways (published once a second).
sleep 1.5
read -r tcp_to_peer tcp_to_client < <(python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
value = lambda d: sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                      if l.startswith("peerlink_turn_tcp_relayed_bytes_total") and d in l)
print(value("to_peer"), value("to_client"))' "$metrics_url")
tcp_minimum=$((3 * MESSAGES * CLIENTS * 180))
if [ "$tcp_to_peer" -ge "$tcp_minimum" ] && [ "$tcp_to_client" -ge "$tcp_minimum" ]; then
    pass "metrics: $tcp_to_peer bytes to peers and $tcp_to_client to clients through tcp relays"
else
    fail "metrics: tcp relays carried $tcp_to_peer / $tcp_to_client bytes, expected at least $tcp_minimum each way"
fi

# Certificate reload on SIGHUP during a TLS session: nothing lost, new handshakes see the
# new certificate.
fingerprint() { openssl x509 -noout -fingerprint -sha256 | cut -d= -f2; }
served() { openssl s_client -connect "127.0.0.1:$tls_port" </dev/null 2>/dev/null | fingerprint; }
before=$(served)
(TARGET_PORT=$tls_port MESSAGES=150 CLIENTS=2 echo_run "tls session across a certificate reload" \
    -t -S -z 20 -u test -w secret >"$tmp/reload.result") &
reload_run=$!
sleep 1.5
cp "$tmp/second.crt" "$tmp/live.crt"
cp "$tmp/second.key" "$tmp/live.key"
kill -HUP "$main_pid"
sleep 0.5
after=$(served)
wait "$reload_run" || true
cat "$tmp/reload.result"
if grep -q "^ok" "$tmp/reload.result"; then passed=$((passed + 1)); else failures=$((failures + 1)); fi
if [ "$before" = "$(fingerprint <"$tmp/first.crt")" ] && [ "$after" = "$(fingerprint <"$tmp/second.crt")" ]; then
    pass "SIGHUP reloaded the certificate (new handshakes get the new one)"
else
    fail "certificate not reloaded: before=$before after=$after"
fi

# The metrics endpoint counted the relayed traffic (published once a second).
sleep 1.5
relayed=$(python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
print(sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("peerlink_turn_relayed_packets_total")))' "$metrics_url")
minimum=$((12 * 2 * MESSAGES * CLIENTS))
if [ "$relayed" -ge "$minimum" ]; then
    pass "metrics: $relayed packets relayed (at least $minimum expected)"
else
    fail "metrics: $relayed packets relayed, expected at least $minimum"
fi

# Refusals.
timeout 20 turnutils_uclient -u test -w wrong -p "$port" -e 127.0.0.1 -r "$peer_port" -n 5 127.0.0.1 \
    >"$tmp/wrong.log" 2>&1 || true
if grep -aqE "error 401|Cannot complete Allocation" "$tmp/wrong.log" && ! grep -aq "tot_recv_msgs=5" "$tmp/wrong.log"; then
    pass "wrong password is refused (401)"
else
    fail "wrong password was not refused"
    tail -5 "$tmp/wrong.log"
fi

start_turn strict
strict_port=$TURN_PORT
timeout 20 turnutils_uclient -u test -w secret -p "$strict_port" -e 127.0.0.1 -r "$peer_port" -n 5 127.0.0.1 \
    >"$tmp/strict.log" 2>&1 || true
if grep -aqE "error 403" "$tmp/strict.log"; then
    pass "loopback peer refused (403) without --allow-loopback-peers"
else
    fail "loopback peer was not refused by default"
    tail -5 "$tmp/strict.log"
fi
timeout 20 turnutils_uclient -T -u test -w secret -p "$strict_port" -m 2 -n 5 127.0.0.1 \
    >"$tmp/strict-tcp.log" 2>&1 || true
if grep -aqE "error 403" "$tmp/strict-tcp.log" && ! grep -aqE "tot_recv_msgs=[1-9]" "$tmp/strict-tcp.log"; then
    pass "tcp relay (RFC 6062) to a loopback peer refused (403) without --allow-loopback-peers"
else
    fail "tcp relay to a loopback peer was not refused by default"
    tail -5 "$tmp/strict-tcp.log"
fi

# The default quota (no --max-allocations-per-user) holds three short uclient runs in a row
# whose allocations are abandoned, not deleted (a 403 ends each run): 12 allocations held.
quota_refused=0
for run in 1 2 3; do
    timeout 20 turnutils_uclient -u test -w secret -p "$strict_port" -e 127.0.0.1 -r "$peer_port" -m 4 -n 5 \
        127.0.0.1 >"$tmp/quota$run.log" 2>&1 || true
    if grep -aq "error 486" "$tmp/quota$run.log"; then quota_refused=$run; fi
done
if [ "$quota_refused" = 0 ] && grep -aq "error 403" "$tmp/quota3.log"; then
    pass "default quota: three uclient runs of 4 clients in a row all allocate"
else
    fail "default quota: run ${quota_refused} refused with 486 (or the third run never allocated)"
    tail -5 "$tmp/quota3.log"
fi
if grep -q "allocation relays nothing yet.*peer address policy" "$tmp/strict.log"; then
    pass "the log says why a refused allocation relays nothing"
else
    fail "no log line says why the 403'd allocations relay nothing"
fi

# A per-allocation bandwidth limit: 180-byte messages every 20 ms are 9,000 B/s each way,
# so a 6,000 B/s budget shared by both directions lets some through and drops the rest.
start_turn limited --allow-loopback-peers --max-bandwidth 6000
timeout 60 turnutils_uclient -u test -w secret -p "$TURN_PORT" -e 127.0.0.1 -r "$peer_port" -n 100 -l 180 \
    127.0.0.1 >"$tmp/limited.log" 2>&1 || true
limited_received=$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+).*/\2/p' "$tmp/limited.log" | tail -1)
if [ -n "$limited_received" ] && [ "$limited_received" -gt 0 ] && [ "$limited_received" -lt 150 ]; then
    pass "--max-bandwidth 6000: $limited_received of 200 echoed, the rest dropped"
else
    fail "--max-bandwidth 6000: ${limited_received:-no} messages echoed (expected some, not all)"
fi

echo "turn-uclient: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
