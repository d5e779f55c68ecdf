# Shared helpers for the test and benchmark scripts. Source it; do not run it.

# A free TCP port on loopback (also free for UDP in practice; callers retry on clashes).
free_port() {
    python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", s.getsockname()[1]))
print(s.getsockname()[1])'
}

# Waits until a line matching $2 appears in file $1, at most $3 seconds (default 10).
wait_for_line() {
    local file=$1 pattern=$2 limit=${3:-10} waited=0
    until grep -qE "$pattern" "$file" 2>/dev/null; do
        sleep 0.1
        waited=$((waited + 1))
        if [ "$waited" -ge $((limit * 10)) ]; then
            echo "timed out waiting for '$pattern' in $file:" >&2
            cat "$file" >&2
            return 1
        fi
    done
}

# Kills the processes whose pids are listed in the PIDS array.
kill_all() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
}

# Creates network namespace $1 with loopback up and a veth pair whose both ends stay inside;
# v0 gets address $2 (e.g. 10.99.0.1/24). Traffic between processes in it never leaves it.
# The caller deletes it (`ip netns del`), usually in an EXIT trap.
veth_namespace() {
    local ns=$1 addr=$2
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add v0 type veth peer name v1
    ip -n "$ns" addr add "$addr" dev v0
    ip -n "$ns" link set v0 up
    ip -n "$ns" link set v1 up
}

# A namespace for media tests with `peerlink serve` in it: both veth ends inside, the default
# route pointing at the far end (Chromium gathers no candidates without one), serve's STUN and
# TURN on 203.0.113.10:3478 relaying within the namespace's range. Sets `ws` to the signaling
# URL; serve's output goes to TMP/serve.out and TMP/serve.log. SERVE_ARGS: more options.
#   media_lab NS PEERLINK TMP
media_lab() {
    local ns=$1 peerlink=$2 tmp=$3
    veth_namespace "$ns" 203.0.113.10/24
    ip -n "$ns" addr add 203.0.113.1/24 dev v1
    ip -n "$ns" route add default via 203.0.113.1 dev v0
    ip netns exec "$ns" "$peerlink" serve --http 127.0.0.1:0 --listen 203.0.113.10:3478 --relay-ip 203.0.113.10 \
        --allow-peer 203.0.113.0/24 --allow-loopback-peers --messages-per-second 200 ${SERVE_ARGS:-} >"$tmp/serve.out" 2>"$tmp/serve.log" &
    wait_for_line "$tmp/serve.out" "signaling on ws://" 15
    ws=$(sed -nE 's/.*signaling on (ws:\/\/[^ ]+).*/\1/p' "$tmp/serve.out" | head -1)
    echo "# signaling $ws (namespace $ns)"
}

# A throwaway CA (DIR/ca.pem) and a certificate it signed for 127.0.0.1 and localhost
# (DIR/NAME.pem, DIR/NAME.key): the HTTPS of a test server on loopback (an ACME CA).
#   loopback_tls_cert DIR NAME
loopback_tls_cert() {
    local dir=$1 name=$2
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=$name test ca" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 1 \
        -copy_extensions copy -out "$dir/$name.pem" 2>/dev/null
}

# "SENT RECEIVED" from the last totals line of a turnutils_uclient log.
uclient_totals() {
    grep -aoE "tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+" "$1" | tail -1 | sed -E 's/[^0-9]+/ /g; s/^ //'
}
