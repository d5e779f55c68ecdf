# An emulated path between two network namespaces, for tests and benchmarks. Source it after
# common.sh, with P (a unique namespace-name prefix, e.g. plp-x$$-), TMP (a scratch folder) and
# PY (a Python with NetfilterQueue) set; then `path_lab_up`, and `path_lab_down` in an EXIT trap.
#
#   A 198.51.100.10 -- R (router) -- B 203.0.113.20
#
# R queues every forwarded packet (iptables NFQUEUE in mangle PREROUTING) to
# tests/lab/path-emulator.py, one process per direction (`emulate`): seeded random loss, a
# token-bucket bottleneck with a drop-tail queue, a fixed delay. `path_check NAME` measures the
# path (ping, iperf3 UDP past the rate and below it) into TMP/NAME.*; tests/lab/path_check.py
# judges and prints those files. RATE_MBIT, DELAY_MS (one way), QUEUE_MS and SEED describe the path.
RATE_MBIT=${RATE_MBIT:-50}
DELAY_MS=${DELAY_MS:-20}
QUEUE_MS=${QUEUE_MS:-100}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
A=${P}a R=${P}r B=${P}b
A_IP=198.51.100.10 B_IP=203.0.113.20
EMULATOR_PIDS=()

path_lab_down() {
    local n
    for n in "$A" "$B" "$R"; do ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    sleep 0.5
    for n in "$A" "$B" "$R"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}

path_lab_up() {
    command -v iperf3 >/dev/null || { echo "no iperf3: run scripts/install-test-deps.sh" >&2; return 1; }
    path_lab_topology || return 1
    ip netns exec "$B" iperf3 -s -B $B_IP >"$TMP/iperf3-server.log" 2>&1 &
}

# The namespaces, links and router alone (no iperf3 server): A and B route everything through
# R (Chromium gathers no candidates without a default route), which forwards only lab traffic
# and queues all of it for the emulators.
path_lab_topology() {
    "$PY" -c 'import netfilterqueue' 2>/dev/null || { echo "no NetfilterQueue in $PY: run scripts/install-test-deps.sh" >&2; return 1; }
    local n l
    for n in "$A" "$R" "$B"; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    ip link add a0 netns "$A" type veth peer name ra netns "$R"
    ip link add b0 netns "$B" type veth peer name rb netns "$R"
    ip -n "$A" addr add $A_IP/24 dev a0
    ip -n "$R" addr add 198.51.100.1/24 dev ra
    ip -n "$B" addr add $B_IP/24 dev b0
    ip -n "$R" addr add 203.0.113.1/24 dev rb
    for l in "$A a0" "$R ra" "$R rb" "$B b0"; do
        set -- $l
        ip -n "$1" link set "$2" up
    done
    ip -n "$A" route add default via 198.51.100.1 dev a0
    ip -n "$B" route add default via 203.0.113.1 dev b0
    ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$R" iptables -P FORWARD DROP
    ip netns exec "$R" iptables -A FORWARD -s 198.51.100.0/24 -d 203.0.113.0/24 -j ACCEPT
    ip netns exec "$R" iptables -A FORWARD -s 203.0.113.0/24 -d 198.51.100.0/24 -j ACCEPT
    # Queued in mangle PREROUTING: the emulator takes each packet's arrival from the kernel's
    # receive stamp, which forwarding clears. Without an emulator bound, a queue drops.
    ip netns exec "$R" iptables -t mangle -A PREROUTING -i ra -j NFQUEUE --queue-num 0
    ip netns exec "$R" iptables -t mangle -A PREROUTING -i rb -j NFQUEUE --queue-num 1
}

queues_bound() {
    ip netns exec "$R" cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null | awk '{print $1}' | sort -n | tr '\n' ' ' | grep -q '^0 1 '
}

# emulate LOSS PREFIX [trace]: both directions' emulators (counters in PREFIX.emu0.json for A>B,
# emu1 B>A; with `trace`, each packet's verdict in PREFIX.emu0.trace and emu1.trace).
emulate() {
    local q tr=()
    EMULATOR_PIDS=()
    for q in 0 1; do
        [ "${3:-}" = trace ] && tr=(--trace "$2.emu$q.trace")
        ip netns exec "$R" "$PY" tests/lab/path-emulator.py --queue $q --delay-ms "$DELAY_MS" --loss "$1" \
            --rate-mbit "$RATE_MBIT" --queue-ms "$QUEUE_MS" --seed $((SEED + q)) --secs 300 \
            --stats "$2.emu$q.json" "${tr[@]}" >"$2.emu$q.out" 2>&1 &
        EMULATOR_PIDS+=($!)
    done
    for _ in $(seq 100); do queues_bound && break; sleep 0.1; done
    queues_bound || { echo "path emulators did not bind their queues:" >&2; cat "$2".emu*.out >&2; return 1; }
}

unemulate() {
    kill -TERM "${EMULATOR_PIDS[@]}" 2>/dev/null || true
    wait "${EMULATOR_PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do queues_bound || break; sleep 0.1; done
}

# path_check NAME LOSS: measures the path with that loss into TMP/NAME.{ping,rate.json,loss.json}
# (and the A>B emulator's verdicts into TMP/NAME.emu0.trace) and adds a line for
# tests/lab/path_check.py to TMP/paths.
path_check() {
    local name=$1 loss=$2 c="$TMP/$1" what try secs=4
    emulate "$loss" "$c" trace
    ip netns exec "$A" ping -q -n -c 40 -i 0.05 -W 1 $B_IP >"$c.ping" 2>&1 || true
    # Rate: UDP at 1.3x the bottleneck (the loss comes before the bottleneck, so it does not
    # lower what leaves it). Loss: UDP at half the rate (queue headroom), in 1499-byte packets
    # (1471 bytes of payload) so that the emulator's trace tells them from the rate run's; on a
    # lossy path long enough for ~16,700 packets (P3, 10 Mbit/s: 20 s), the sample
    # tests/lab/path_check.py's binomial interval needs to be narrow.
    [ "$loss" = 0 ] || secs=$(((16667 * 1471 * 8 + RATE_MBIT * 500000 - 1) / (RATE_MBIT * 500000)))
    # (The server may still be busy with the run before: a run that fails is tried again. iperf3
    # 3.12 can exit 0 having failed, e.g. "unable to receive control message: Connection reset by
    # peer" right after the rate run, so a run has failed unless its JSON has no error.)
    for what in "rate $((RATE_MBIT * 13 / 10)) 1472 4" "loss $((RATE_MBIT / 2)) 1471 $secs"; do
        set -- $what
        for try in 1 2 3; do
            ip netns exec "$A" iperf3 -c $B_IP -u -b "${2}M" -l "$3" -w 4M -t "$4" -J >"$c.$1.json" 2>"$c.$1.err" &&
                ! grep -q '"error"' "$c.$1.json" && break
            echo "$1 try $try: $(grep -o '"error":.*' "$c.$1.json" || tail -1 "$c.$1.err")" >>"$c.tries"
            sleep 1
        done
    done
    unemulate
    echo "$name $loss $RATE_MBIT $DELAY_MS" >>"$TMP/paths"
}
