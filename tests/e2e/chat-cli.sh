#!/usr/bin/env bash
# `peerlink chat` with `peerlink chat` through `peerlink serve`, everything on loopback: two
# peers meet in a room (the second offers), print each other's lines, and report the
# selected pair; over ws:// and over wss:// (`serve --cert`), and an untrusted certificate
# refused with a clear error; a room of three where every line reaches both others, through a
# server stop and restart on the same port (connections stay up, everyone rejoins with its
# id, nothing is set up again); a peer at the end of its input exits 0 after its last line
# was delivered, and one whose input is still open exits when the last other peer has gone.
# (The browser app against `peerlink chat`: tests/e2e/chat-browser.sh.)
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
                --bind 127.0.0.1 >"$tmp/$label-$1.out" 2>"$tmp/$label-$1.err"
    }
    chat alice "hello from alice" 0 &
    PIDS+=($!)
    sleep 1
    chat bob "hello from bob" 1 &
    PIDS+=($!)
    # Files of their own per case: the chats of a case may still be finishing while the
    # next one starts.
    check "$label: alice got bob's line" "$tmp/$label-alice.out" "hello from bob"
    check "$label: bob got alice's line" "$tmp/$label-bob.out" "hello from alice"
    # Exactly DESIGN.md's line.
    pair='^selected pair: (host|srflx|prflx|relay) -> (host|srflx|prflx|relay)$'
    check "$label: alice reports the selected pair" "$tmp/$label-alice.err" "$pair"
    check "$label: bob reports the selected pair" "$tmp/$label-bob.err" "$pair"
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

# Rooms of three, a peer leaving, and a server restart under live connections. Chat input
# comes from FIFOs so the test decides when each line goes and when input ends.
rm -f "$tmp/serve.out"
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --allow-loopback-peers >"$tmp/serve.out" 2>"$tmp/serve.log" &
serve_pid=$!
PIDS+=($serve_pid)
wait_for_line "$tmp/serve.out" "signaling on ws://"
url=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out")
http=$(sed -nE 's/.*signaling on ws:\/\/([^/]+)\/ws.*/\1/p' "$tmp/serve.out")
room="three$$"
# Every chat starts before any FIFO is opened for writing here, so none inherits another's
# write end (its input would then never end).
for who in ann ben cat; do
    mkfifo "$tmp/$who.in"
    timeout 90 "$peerlink" chat --server "$url" --room "$room" --name "$who" --bind 127.0.0.1 \
        <"$tmp/$who.in" >"$tmp/$who.out" 2>"$tmp/$who.err" &
    eval "${who}_pid=$!"
    PIDS+=($!)
done
exec {ann_fd}>"$tmp/ann.in"
wait_for_line "$tmp/ann.err" "joined room"
exec {ben_fd}>"$tmp/ben.in"
wait_for_line "$tmp/ben.err" "joined room"
exec {cat_fd}>"$tmp/cat.in"
wait_for_line "$tmp/cat.err" "joined room"
# Everyone connected with everyone: two 'Connected' lines each.
for who in ann ben cat; do
    for _ in $(seq 100); do [ "$(grep -c 'connection Connected' "$tmp/$who.err")" -ge 2 ] && break; sleep 0.2; done
done
echo "line from ann" >&"$ann_fd"
echo "line from cat" >&"$cat_fd"
check "three: ben got ann's line" "$tmp/ben.out" "line from ann"
check "three: cat got ann's line" "$tmp/cat.out" "line from ann"
check "three: ann got cat's line" "$tmp/ann.out" "line from cat"
check "three: ben got cat's line" "$tmp/ben.out" "line from cat"

# The server stops: connections stay, lines keep flowing; it comes back on the same port and
# everyone is back in the room under the same id.
kill "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
check "restart: ann notices signaling is gone" "$tmp/ann.err" "reconnecting \(connections stay up\)"
echo "said while the server is down" >&"$ben_fd"
check "restart: ann got ben's line with no server" "$tmp/ann.out" "said while the server is down"
check "restart: cat got ben's line with no server" "$tmp/cat.out" "said while the server is down"
rm -f "$tmp/serve.out"
# (The new server must not hold the chats' FIFOs open.)
"$peerlink" serve --http "$http" --listen 127.0.0.1:0 --allow-loopback-peers >"$tmp/serve.out" 2>"$tmp/serve2.log" \
    {ann_fd}>&- {ben_fd}>&- {cat_fd}>&- &
PIDS+=($!)
wait_for_line "$tmp/serve.out" "signaling on ws://"
for who in ann ben cat; do
    check "restart: $who is back in the room with its id" "$tmp/$who.err" "signaling is back \(same id\)"
done
echo "said after the restart" >&"$cat_fd"
check "restart: ann got cat's line after the restart" "$tmp/ann.out" "said after the restart"
check "restart: ben got cat's line after the restart" "$tmp/ben.out" "said after the restart"
if grep -qE "is here; offering|joined$" "$tmp/ann.err" "$tmp/ben.err" "$tmp/cat.err" &&
    [ "$(grep -c 'connection Connected' "$tmp/ann.err")" -gt 2 ]; then
    echo "FAIL restart: a connection was set up again"
    status=1
else
    echo "ok   restart: no connection was set up again"
fi

# Cat's input ends: it exits 0 once its last line is acknowledged (and the others print it).
echo "cat's last words" >&"$cat_fd"
exec {cat_fd}>&-
set +e
wait "$cat_pid"
rc=$?
set -e
if [ "$rc" = 0 ]; then echo "ok   cat exits 0 at the end of its input"; else echo "FAIL cat exited $rc"; status=1; fi
check "ann got cat's last line" "$tmp/ann.out" "cat's last words"
check "ann was told cat has gone" "$tmp/ann.err" "cat \(.*\): the other peer closed the connection"
# Ben's input ends too: ann, whose input is still open, exits once the last other peer is gone.
exec {ben_fd}>&-
set +e
wait "$ben_pid"
ben_rc=$?
timeout 15 tail --pid="$ann_pid" -f /dev/null
ann_gone=$?
wait "$ann_pid"
ann_rc=$?
set -e
if [ "$ben_rc" = 0 ] && [ "$ann_gone" = 0 ] && [ "$ann_rc" = 0 ]; then
    echo "ok   ann exits 0 when the last other peer has gone, its input still open"
else
    echo "FAIL ann did not exit when everyone else left: ben $ben_rc, ann gone $ann_gone rc $ann_rc"
    status=1
fi
exec {ann_fd}>&-

if [ "$status" != 0 ]; then
    for f in ws-alice.err ws-bob.err wss-alice.err wss-bob.err ann.err ben.err cat.err serve.log; do echo "--- $f"; tail -20 "$tmp/$f" 2>/dev/null; done
fi
exit "$status"
