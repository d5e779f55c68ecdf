#!/usr/bin/env bash
# An ACME CA that rate-limits (RFC 8555 §6.6): a small fake directory over HTTPS on loopback
# (pebble cannot be made to) answers every new account with 429
# urn:ietf:params:acme:error:rateLimited and `Retry-After: 15`. `peerlink serve` must:
#   - log the failure with the CA's words and what to check, and a wait that honours
#     Retry-After (15 s, not the 10 s of its first backoff step nor the hour it takes when a
#     CA gives no Retry-After);
#   - answer HTTPS with a 503 that says the CA is rate-limiting;
#   - keep STUN and TURN running meanwhile (coturn's stunclient and uclient);
#   - try again after the wait, and back off further (20 s) when refused again.
#   acme-ratelimit.sh [PEERLINK]
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
t0=$SECONDS

# The fake CA's HTTPS: a throwaway CA and a certificate for 127.0.0.1 (what --acme-ca-root trusts).
loopback_tls_cert "$tmp" acme

acme_port=$(free_port)
# Every request is one line on standard output: "METHOD PATH".
python3 - "$acme_port" "$tmp/acme.pem" "$tmp/acme.key" >"$tmp/ca.log" 2>"$tmp/ca.err" <<'PY' &
import http.server, json, ssl, sys, uuid
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = f"https://127.0.0.1:{port}"

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body=b"", kind="application/json", extra=()):
        self.send_response(code)
        self.send_header("Replay-Nonce", uuid.uuid4().hex)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        print(self.command, self.path, flush=True)
        if self.path == "/dir":
            directory = {"newNonce": base + "/nonce", "newAccount": base + "/account",
                         "newOrder": base + "/order", "revokeCert": base + "/revoke",
                         "keyChange": base + "/key-change"}
            self.answer(200, json.dumps(directory).encode())
        elif self.path == "/nonce":
            self.answer(200)
        else:
            self.answer(404)

    do_HEAD = do_GET

    def do_POST(self):
        print(self.command, self.path, flush=True)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        problem = {"type": "urn:ietf:params:acme:error:rateLimited", "status": 429,
                   "detail": "too many new registrations from this address (fake CA)"}
        self.answer(429, json.dumps(problem).encode(), "application/problem+json",
                    [("Retry-After", "15")])

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
PIDS+=($!)
for _ in $(seq 50); do
    curl -fsS --cacert "$tmp/ca.pem" "https://127.0.0.1:$acme_port/dir" >/dev/null 2>&1 && break
    sleep 0.1
done

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)
https_port=$(free_port)
"$peerlink" serve --http "127.0.0.1:$https_port" --listen 127.0.0.1:0 --acme-domain "$domain" \
    --acme-directory "https://127.0.0.1:$acme_port/dir" --acme-ca-root "$tmp/ca.pem" \
    --acme-cache "$tmp/cache" --auth-secret acme-secret --allow-loopback-peers \
    >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "turn listening on" 10

if wait_for_line "$tmp/serve.log" "acme: could not get a certificate" 30; then
    line=$(grep -m1 "could not get a certificate" "$tmp/serve.log")
    missing=()
    for want in "too many new registrations from this address (fake CA) (rateLimited)" \
        "rate limited" "Check that the cache folder $tmp/cache is kept across restarts" \
        "Retrying in 15 s (the CA's Retry-After asked for 15 s)" "STUN and TURN are unaffected"; do
        grep -qF "$want" <<<"$line" || missing+=("$want")
    done
    if [ ${#missing[@]} = 0 ]; then
        ok "rateLimited is logged with the CA's reason, what to check and a wait honouring Retry-After: $(sed 's/.*acme: //' <<<"$line" | cut -c1-160)...$(grep -oE 'Retrying in [^;]*' <<<"$line")"
    else
        fail "the rate-limited log line lacks: ${missing[*]}: $line"
    fi
else
    fail "no log line for the rate-limited CA: $(tail -3 "$tmp/serve.log")"
fi
waiting=$(curl -sk -w ' %{http_code}' "https://127.0.0.1:$https_port/" || true)
if grep -q "rateLimited" <<<"$waiting" && grep -q " 503$" <<<"$waiting"; then
    ok "meanwhile HTTPS answers 503 saying the CA rate-limits"
else
    fail "HTTPS while rate-limited: $waiting"
fi
turn_port=$(sed -nE 's/.*turn listening on 127\.0\.0\.1:([0-9]+) \(udp.*/\1/p' "$tmp/serve.out")
if timeout 10 turnutils_stunclient -p "$turn_port" -L 127.0.0.1 127.0.0.1 2>&1 | grep -q "UDP reflexive addr"; then
    ok "STUN answers while the CA rate-limits"
else
    fail "no STUN answer while the CA rate-limits"
fi
timeout 60 turnutils_uclient -u acme -W acme-secret -p "$turn_port" -e 127.0.0.1 -r "$peer_port" -m 1 -c -n 20 \
    127.0.0.1 >"$tmp/uclient.log" 2>&1 || true
read -r sent received <<<"$(uclient_totals "$tmp/uclient.log")"
if [ "${sent:-0}" -gt 0 ] && [ "$sent" = "$received" ]; then
    ok "TURN relays while the CA rate-limits ($received of $sent echoed)"
else
    fail "TURN while the CA rate-limits: $(grep -aE 'tot_send_msgs|error' "$tmp/uclient.log" | tail -2)"
fi
accounts=$(grep -c "^POST /account" "$tmp/ca.log" || true)
[ "$accounts" = 1 ] || fail "expected one account request before the wait, the CA saw $accounts"

# The retry, once the wait is over; refused again, the next wait grows past Retry-After.
if wait_for_line "$tmp/serve.log" "Retrying in 20 s" 40 && [ "$(grep -c '^POST /account' "$tmp/ca.log")" = 2 ]; then
    ok "retried after the wait (2 account requests in all); refused again, it backs off further: $(grep -oE 'Retrying in [^;]*' "$tmp/serve.log" | paste -sd' ' | sed 's/ Retrying/, then Retrying/')"
else
    fail "no retry after Retry-After: $(grep -c '^POST /account' "$tmp/ca.log") requests; $(tail -2 "$tmp/serve.log")"
fi
echo "# acme-ratelimit: $((SECONDS - t0)) s"
exit $status
