#!/usr/bin/env bash
# TURN relaying: `peerlink turn` next to coturn's `turnserver`, equivalent flags, same
# machine, same run, with coturn's own turnutils_uclient as the load generator and
# turnutils_peer as the echoing peer. Prints relayed packets per second, Mbit/s, the
# server's CPU-seconds, packets per CPU-second and CPU-seconds per 100k relayed packets,
# the busiest thread's share of the server's CPU time, losses, and the ratios.
#
#   bench/turn.sh                          # 3 rounds per server
#   ROUNDS=1 CLIENTS=20 MESSAGES=500 bench/turn.sh
#   LOAD=2 ROUNDS=3 KEEP=/tmp/turn-logs bench/turn.sh   # with 2 busy loops on the CPUs,
#                                                        # keeping the servers' logs
#   RELAY_THREADS=1 bench/turn.sh          # peerlink on one relay thread
#   SYSCALLS=1 bench/turn.sh               # also count each server's system calls, epoll
#                                          # wake-ups and context switches per relayed packet
#                                          # (perf stat on the syscall tracepoints)
#   BASELINE=/tmp/peerlink-old bench/turn.sh  # also an older peerlink binary, same flags, in
#                                             # the same rounds ("before" next to "after")
#   LISTEN_IP=0.0.0.0 BASELINE=target/release/peerlink bench/turn.sh
#                                          # peerlink on the wildcard address (packet info on
#                                          # every datagram: IP_PKTINFO) next to the same
#                                          # binary on 127.0.0.1 (BASELINE_LISTEN_IP)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}      # uclient sessions (each one allocation, echo through the peer)
MESSAGES=${MESSAGES:-1000}  # messages per session
LENGTH=${LENGTH:-1000}      # bytes per message
INTERVAL=${INTERVAL:-5}     # ms between a session's messages (uclient -z)
FLAGS=${FLAGS:-}            # extra uclient flags, e.g. "-t" for TCP or "-s" for Send indications
LOAD=${LOAD:-0}             # busy loops run beside the servers (each bounded to 15 minutes)
KEEP=${KEEP:-}              # a directory to keep the logs in
RELAY_THREADS=${RELAY_THREADS:-}  # peerlink's --relay-threads (default: its own, one per core)
SYSCALLS=${SYSCALLS:-}      # 1: count system calls per relayed packet (needs perf)
LISTEN_IP=${LISTEN_IP:-127.0.0.1}                    # peerlink's listening address (clients
BASELINE_LISTEN_IP=${BASELINE_LISTEN_IP:-127.0.0.1}  # always send to 127.0.0.1)
EVENTS=syscalls:sys_enter_recvmmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,context-switches
command -v turnserver >/dev/null || { echo "coturn missing: run scripts/install-test-deps.sh" >&2; exit 1; }

PEERLINK=${PEERLINK:-}       # a peerlink binary to use instead of building one
BASELINE=${BASELINE:-}       # another peerlink binary to run beside it (e.g. before a change)
if [ -z "$PEERLINK" ]; then
    cargo build --release -q -p peerlink-cli -p peerlink-bench --bin peerlink
    PEERLINK=target/release/peerlink
fi
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$tmp"/. "$KEEP"/; fi; rm -rf "$tmp"' EXIT
# CPU time of every thread of a process in seconds, from the scheduler's nanosecond
# accounting (/proc/PID/task/*/schedstat), finer than the 10 ms ticks of /proc/PID/stat.
# Threads that exited are not counted; both servers keep their threads for the whole run.
cpu() { cat /proc/"$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.3f", ns / 1e9 }'; }
# Each thread's CPU time ("tid seconds" lines), to find the busiest thread of a run.
threads() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(awk '{ printf "%.4f", $1 / 1e9 }' "$t/schedstat")"; done; }
# The largest per-thread CPU increase between two `threads` listings, as a share of the total.
# User and kernel CPU time of a process in clock ticks ("utime stime", /proc/PID/stat fields
# 14 and 15; the command name in field 2 may hold spaces, so count from its closing paren).
ticks() { sed -E 's/^.*\) //' /proc/"$1"/stat | awk '{ print $12, $13 }'; }
busiest() { awk 'NR == FNR { before[$1] = $2; next } { d = $2 - before[$1]; total += d; if (d > max) max = d }
    END { printf "%.2f", (total > 0 ? max / total : 0) }' "$1" "$2"; }

for _ in $(seq "$LOAD"); do
    timeout 900 sh -c 'while :; do :; done' &
    PIDS+=($!)
done

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
PIDS+=($!)

start_peerlink() { # binary, name, relay ports, listening address; sets STARTED_PORT and STARTED_PID
    STARTED_PORT=$(free_port)
    "$1" turn --listen "$4:$STARTED_PORT" --relay-ip 127.0.0.1 --realm example.test \
        --user test:secret --allow-loopback-peers --relay-ports "$3" --max-allocations-per-user 100000 \
        ${RELAY_THREADS:+--relay-threads "$RELAY_THREADS"} >"$tmp/$2.out" 2>"$tmp/$2.log" &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}
start_peerlink "$PEERLINK" pl 40000-44999 "$LISTEN_IP"
pl_port=$STARTED_PORT
pl_pid=$STARTED_PID
if [ -n "$BASELINE" ]; then
    start_peerlink "$BASELINE" base 35000-39999 "$BASELINE_LISTEN_IP"
    base_port=$STARTED_PORT
    base_pid=$STARTED_PID
fi
ct_port=$(free_port)
turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$ct_port" --lt-cred-mech \
    --user=test:secret --realm=example.test --no-tls --no-dtls --no-cli --allow-loopback-peers \
    --min-port=45000 --max-port=49999 --log-file="$tmp/ct.log" --simple-log --pidfile="$tmp/ct.pid" \
    >/dev/null 2>&1 &
PIDS+=($!)
ct_pid=$!
wait_for_line "$tmp/pl.out" "turn listening"
[ -z "$BASELINE" ] || wait_for_line "$tmp/base.out" "turn listening"
wait_for_line "$tmp/ct.log" "Total General servers|turn server id=0 created"
sleep 0.5

run() { # name pid port
    local name=$1 pid=$2 port=$3 before after start end log="$tmp/$1.uclient" share
    threads "$pid" >"$tmp/threads.before"
    before=$(cpu "$pid")
    local ticks0 ticks1
    ticks0=$(ticks "$pid")
    local perf_pid=
    if [ -n "$SYSCALLS" ]; then
        perf stat -x, -e "$EVENTS" -p "$pid" -o "$tmp/$name.perf" &
        perf_pid=$!
        sleep 0.2
    fi
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout 300 turnutils_uclient $FLAGS -u test -w secret -p "$port" -e 127.0.0.1 -r "$peer_port" \
        -m "$CLIENTS" -n "$MESSAGES" -l "$LENGTH" -z "$INTERVAL" 127.0.0.1 >"$log" 2>&1 || true
    end=$(date +%s.%N)
    after=$(cpu "$pid")
    ticks1=$(ticks "$pid")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    threads "$pid" >"$tmp/threads.after"
    share=$(busiest "$tmp/threads.before" "$tmp/threads.after")
    cp "$log" "$tmp/$name.uclient.$(date +%s%N)"
    local sent received lost
    sent=$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+).*/\1/p' "$log" | tail -1)
    received=$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+).*/\2/p' "$log" | tail -1)
    lost=$(sed -nE 's/.*Total lost packets ([0-9]+).*/\1/p' "$log" | tail -1)
    # Each echoed message crosses the relay twice (client→peer, peer→client).
    awk -v n="$name" -v s="${sent:-0}" -v r="${received:-0}" -v l="${lost:-?}" -v t0="$start" -v t1="$end" \
        -v c0="$before" -v c1="$after" -v len="$LENGTH" -v share="$share" -v k0="$ticks0" -v k1="$ticks1" 'BEGIN {
        t = t1 - t0; c = c1 - c0; p = s + r
        split(k0, a, " "); split(k1, b, " "); u = b[1] - a[1]; k = b[2] - a[2]
        kshare = (u + k > 0 ? k / (u + k) : 0)
        printf "name=%s sent=%d received=%d lost=%s seconds=%.2f relayed_pkts_per_s=%.0f mbit_per_s=%.1f server_cpu_s=%.2f pkts_per_cpu_s=%.0f cpu_s_per_100k=%.3f kernel_share=%.2f kernel_cpu_s_per_100k=%.3f busiest_thread=%.2f\n",
            n, s, r, l, t, p / t, p * len * 8 / t / 1e6, c, (c > 0 ? p / c : 0), (p > 0 ? c * 100000 / p : 0), kshare,
            (p > 0 ? c * kshare * 100000 / p : 0), share }'
    if [ -n "$perf_pid" ]; then
        # Per 1000 relayed packets: receive and send calls, epoll waits, context switches.
        awk -F, -v n="$name" -v p="$(( ${sent:-0} + ${received:-0} ))" '
            $3 ~ /recv/ { recv += $1 } $3 ~ /send/ { send += $1 } $3 ~ /epoll/ { wait += $1 }
            $3 ~ /context-switches/ { cs += $1 }
            END { if (p > 0) printf "syscalls server=%s per_1000_pkts: recv=%.0f send=%.0f epoll_wait=%.0f context_switches=%.0f\n",
                n, recv * 1000 / p, send * 1000 / p, wait * 1000 / p, cs * 1000 / p }' "$tmp/$name.perf"
    fi
}

echo "# $ROUNDS rounds: $CLIENTS sessions x $MESSAGES messages of $LENGTH bytes every ${INTERVAL} ms ${FLAGS:+(uclient $FLAGS)}"
for _ in $(seq "$ROUNDS"); do
    run peerlink "$pl_pid" "$pl_port" | tee -a "$tmp/results"
    [ -z "$BASELINE" ] || run baseline "$base_pid" "$base_port" | tee -a "$tmp/results"
    run coturn "$ct_pid" "$ct_port" | tee -a "$tmp/results"
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { grep "name=$1 " "$tmp/results" | sed -E "s/.* $2=([0-9.?]+).*/\1/" | median; }
echo "# summary (medians)"
printf '%-10s %16s %10s %14s %18s %18s %14s %15s %6s\n' server "relayed pkt/s" "Mbit/s" "server CPU-s" "pkts per CPU-s" \
    "CPU-s per 100k" "kernel share" "busiest thread" lost
for n in peerlink ${BASELINE:+baseline} coturn; do
    printf '%-10s %16s %10s %14s %18s %18s %14s %15s %6s\n' "$n" "$(field $n relayed_pkts_per_s)" "$(field $n mbit_per_s)" \
        "$(field $n server_cpu_s)" "$(field $n pkts_per_cpu_s)" "$(field $n cpu_s_per_100k)" \
        "$(field $n kernel_share)" "$(field $n busiest_thread)" "$(field $n lost)"
done
# A peerlink run that relayed nothing: what the server said about it.
if grep -q "name=peerlink sent=[0-9]* received=0 " "$tmp/results"; then
    echo "# peerlink relayed nothing in a run; its log says:"
    grep -E "relays nothing|without relaying|refused|437|486|508" "$tmp/pl.log" | head -20
fi
awk -v a="$(field peerlink relayed_pkts_per_s)" -v b="$(field coturn relayed_pkts_per_s)" \
    -v c="$(field peerlink pkts_per_cpu_s)" -v d="$(field coturn pkts_per_cpu_s)" \
    'BEGIN { printf "ratio peerlink/coturn: relayed pkt/s %.2fx, packets per CPU-second %.2fx\n", a / b, (d > 0 ? c / d : 0) }'
# The kernel's part (system CPU time: receiving and sending the datagrams) bounds any ratio a
# relay on the kernel's UDP sockets can reach: coturn's total over peerlink's kernel time alone.
awk -v k="$(field peerlink kernel_cpu_s_per_100k)" -v d="$(field coturn cpu_s_per_100k)" \
    'BEGIN { if (k > 0) printf "kernel bound: coturn CPU-s per 100k / peerlink kernel CPU-s per 100k = %.2fx (the most a relay with peerlink'"'"'s system calls could reach)\n", d / k }'
if [ -n "$BASELINE" ]; then
    awk -v a="$(field baseline relayed_pkts_per_s)" -v b="$(field coturn relayed_pkts_per_s)" \
        -v c="$(field baseline pkts_per_cpu_s)" -v d="$(field coturn pkts_per_cpu_s)" \
        'BEGIN { printf "ratio baseline/coturn: relayed pkt/s %.2fx, packets per CPU-second %.2fx\n", a / b, (d > 0 ? c / d : 0) }'
fi
