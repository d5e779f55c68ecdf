#!/usr/bin/env bash
# `peerlink chat` with `peerlink chat` through `peerlink serve`, everything on loopback: two
# peers meet in a room (the second offers), print each other's lines, and report the
# selected pair; over ws:// and over wss:// (`serve --cert`), and an untrusted certificate
# refused with a clear error. (The browser app against `peerlink chat`: tests/e2e/chat-browser.sh.)
#
#   tests/e2e/chat-cli.sh [path/to/peerlink]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
status=0

check() { # what file pattern
    local waited=0
    until grep -qE "$3" "$2" 2>/dev/null; do
        sleep 0.2
        waited=$((waited + 1))
        if [ "$waited" -ge 100 ]; then
            echo "FAIL $1"
            status=1
            return
        fi
    done
    echo "ok   $1: $(grep -m1 -E "$3" "$2")"
}

# Two peers through a server started with SERVE_ARGS; SCHEME (ws or wss) is what it must
# offer. The chat commands run with the environment given after the scheme.
meet() { # label scheme [env...] -- [serve args...]
    local label=$1 scheme=$2
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    # A new file: the shell truncates the old one only once the server process has started,
    # so waiting on it could read the previous server's address.
    rm -f "$tmp/serve.out"
    "$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --allow-loopback-peers "$@" \
        >"$tmp/serve.out" 2>"$tmp/serve.log" &
    PIDS+=($!)
    wait_for_line "$tmp/serve.out" "signaling on $scheme://"
    url=$(sed -nE "s/.*signaling on ($scheme:\/\/[^ ]+).*/\1/p" "$tmp/serve.out")
    # The certificate names localhost, not 127.0.0.1.
    url=${url/127.0.0.1/localhost}
    room="chat$$$label"
    chat() { # name first-line delay-before-line
        (sleep "$3"; echo "$2"; sleep 8) |
            env "${envs[@]}" timeout 30 "$peerlink" chat --server "$url" --room "$room" --name "$1" \
                --bind 127.0.0.1 >"$tmp/$1.out" 2>"$tmp/$1.err"
    }
    chat alice "hello from alice" 0 &
    PIDS+=($!)
    sleep 1
    chat bob "hello from bob" 1 &
    PIDS+=($!)
    check "$label: alice got bob's line" "$tmp/alice.out" "hello from bob"
    check "$label: bob got alice's line" "$tmp/bob.out" "hello from alice"
    # Exactly DESIGN.md's line.
    pair='^selected pair: (host|srflx|prflx|relay) -> (host|srflx|prflx|relay)$'
    check "$label: alice reports the selected pair" "$tmp/alice.err" "$pair"
    check "$label: bob reports the selected pair" "$tmp/bob.err" "$pair"
    kill_all
    PIDS=()
}

meet ws ws --

# wss:// to `peerlink serve --cert`: a certificate from a private CA, trusted through
# SSL_CERT_FILE.
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null; }
ec -x509 -days 1 -subj "/CN=test CA" -keyout "$tmp/ca.key" -out "$tmp/ca.pem"
ec -subj "/CN=localhost" -keyout "$tmp/key.pem" -out "$tmp/req.pem"
printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n' >"$tmp/leaf.ext"
openssl x509 -req -in "$tmp/req.pem" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 1 \
    -extfile "$tmp/leaf.ext" -out "$tmp/cert.pem" 2>/dev/null
meet wss wss SSL_CERT_FILE="$tmp/ca.pem" -- --cert "$tmp/cert.pem" --key "$tmp/key.pem"

# Without trusting it, the client gives up at once and says why.
rm -f "$tmp/serve.out"
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
    >"$tmp/serve.out" 2>"$tmp/serve.log" &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "signaling on wss://"
url=$(sed -nE 's/.*signaling on (wss:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
url=${url/127.0.0.1/localhost}
if SSL_CERT_FILE=/dev/null timeout 20 "$peerlink" chat --server "$url" --room untrusted --bind 127.0.0.1 \
    </dev/null >/dev/null 2>"$tmp/untrusted.err"; then
    echo "FAIL an untrusted certificate was accepted"
    status=1
elif grep -q "SSL_CERT_FILE" "$tmp/untrusted.err"; then
    echo "ok   an untrusted certificate ends the client with a hint: $(grep -m1 -i certificate "$tmp/untrusted.err")"
else
    echo "FAIL no clear error for an untrusted certificate (exit after: $(tail -2 "$tmp/untrusted.err"))"
    status=1
fi

if [ "$status" != 0 ]; then
    for f in alice.err bob.err serve.log; do echo "--- $f"; tail -20 "$tmp/$f"; done
fi
exit "$status"
