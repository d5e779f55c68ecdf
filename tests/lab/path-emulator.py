#!/usr/bin/env python3
# Copied from the team lab (shared/lab/path-emulator.py) so the tests carry their own copy.
"""Userspace path emulator (this kernel has no sch_netem), one direction per process: the packets
iptables sends to NFQUEUE --queue N go through, in order,
  1. random loss (--loss, a fraction, e.g. 0.01),
  2. a bottleneck: a token bucket of --rate-mbit (depth --burst-bytes, default one 1500-byte packet) fed by a
     drop-tail FIFO holding at most --queue-ms of waiting at that rate (a packet that would wait longer is dropped),
  3. a fixed one-way --delay-ms (plus --jitter-ms gaussian jitter, order preserving).
Verdicts are given when a packet is due, so the kernel holds the packets meanwhile (no copy back).
A packet's arrival is the kernel's receive timestamp (SO_TIMESTAMP is switched on here; queue in mangle PREROUTING,
forwarding clears it), so a late wake-up of this process does not bunch arrivals into a false queue; the process
asks for real-time scheduling (SCHED_FIFO, else nice -10) so that verdicts leave on time on a busy machine.
nfq-netem.py beside it is the older delay/jitter/loss-only version.
Needs libnetfilter-queue-dev and pip NetfilterQueue. Run inside the router namespace, e.g.
  iptables -t mangle -A PREROUTING -i ra -d 10.123.2.2 -j NFQUEUE --queue-num 0
  python path-emulator.py --queue 0 --delay-ms 20 --loss 0.01 --rate-mbit 50 --queue-ms 100 --secs 120 --stats s.json
Bounded by --secs; SIGTERM ends it cleanly. Writes its counters as JSON to --stats at the end and on SIGUSR1.
With --alt-rate-mbit, each SIGUSR2 swaps the bottleneck rate with that one (printing the wall-clock time of the swap).
"""
import argparse, collections, json, os, random, select, signal, socket, sys, time
from netfilterqueue import NetfilterQueue

ap = argparse.ArgumentParser()
ap.add_argument("--queue", type=int, default=0)
ap.add_argument("--delay-ms", type=float, default=0)
ap.add_argument("--jitter-ms", type=float, default=0)
ap.add_argument("--loss", type=float, default=0)
ap.add_argument("--rate-mbit", type=float, default=0, help="bottleneck rate in Mbit/s (0: none)")
ap.add_argument("--alt-rate-mbit", type=float, default=None,
                help="a second bottleneck rate (0: none): each SIGUSR2 swaps it with the current one (a limit set and lifted)")
ap.add_argument("--queue-ms", type=float, default=100, help="drop-tail queue limit, in ms of waiting at the rate")
ap.add_argument("--burst-bytes", type=float, default=1500, help="token bucket depth")
ap.add_argument("--secs", type=float, default=120)
ap.add_argument("--seed", type=int, default=None,
                help="seed of the loss draws, drawn again from the start at each SIGUSR1 (each run sees the same ones)")
ap.add_argument("--stats", default=None)
ap.add_argument("--trace", default=None, help="write 'time length verdict class' per packet (d delivered, l lost, q queue drop; "
                "time from the start, whose wall-clock time the first line gives: '# start EPOCH'; class as in --lost-log)")
ap.add_argument("--lost-log", default=None,
                help="write 'time class' per packet dropped by --loss: rtp PT SSRC, rtcp PT FMT (first packet of a compound) or other")
a = ap.parse_args()
rnd = random.Random(a.seed)
sched = "fifo"
try:  # the path must keep its timing when the machine is busy (RT throttling still bounds it to 95 % of a CPU)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
except (OSError, AttributeError):
    sched = "nice"
    try: os.nice(-10)
    except OSError: sched = "normal"
# Any socket with SO_TIMESTAMP (29) makes the kernel stamp every received packet; NFQUEUE passes the stamp on.
_ts_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_ts_sock.setsockopt(socket.SOL_SOCKET, 29, 1)
clock = time.time  # the kernel stamps are CLOCK_REALTIME

delay = a.delay_ms / 1000
rate = a.rate_mbit * 1e6 / 8  # bytes per second
qlimit = a.queue_ms / 1000
burst = a.burst_bytes
st = dict(queue=a.queue, sched=sched, stamped=0, max_lag_ms=0.0, pkts_in=0, bytes_in=0, loss_drops=0, queue_drops=0, pkts_out=0, bytes_out=0,
          max_pkt=0, max_wait_ms=0.0, max_held=0, first_s=None, last_s=None,
          # the longest time between two full-size (>= 1000 bytes) packets since the last SIGUSR1: a sender's silence
          gap_ms=0.0, big_pkts=0)
last_big = None
trace = open(a.trace, "w", buffering=1 << 16) if a.trace else None
lost_log = open(a.lost_log, "w", buffering=1 << 12) if a.lost_log else None


def classify(ip):
    """What an IPv4 packet carries, for --lost-log: UDP payloads that look like RTP or RTCP (RFC 7983: first byte
    128-191; RTCP by packet type 192-223, RFC 5761) are named by payload type and SSRC, or packet type and FMT.
    SRTP and SRTCP leave those headers in the clear."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return "other"
    u = ip[(ip[0] & 15) * 4 + 8:]
    if len(u) < 8 or not 128 <= u[0] <= 191:
        return "other"
    if 192 <= u[1] <= 223:
        return f"rtcp {u[1]} {u[0] & 31}"
    if len(u) < 12:
        return "other"
    return f"rtp {u[1] & 127} {int.from_bytes(u[8:12], 'big')}"
fifo = collections.deque()  # (due, packet, length): due times never decrease
tokens, tok_at, last_due = burst, 0.0, 0.0
t_start = clock()
if trace: trace.write(f"# start {t_start:.6f}\n")


def cb(pkt):
    global tokens, tok_at, last_due, last_big
    now = clock()
    ts = pkt.get_timestamp()
    if ts and 0 <= now - ts < 1.0:  # arrival as the kernel saw it
        lag = (now - ts) * 1000
        if lag > st["max_lag_ms"]: st["max_lag_ms"] = lag
        now = ts; st["stamped"] += 1
    n = pkt.get_payload_len()
    st["pkts_in"] += 1; st["bytes_in"] += n
    if n > st["max_pkt"]: st["max_pkt"] = n
    if st["first_s"] is None: st["first_s"] = round(now - t_start, 3)
    if n >= 1000:
        if last_big is not None and (now - last_big) * 1000 > st["gap_ms"]: st["gap_ms"] = (now - last_big) * 1000
        last_big = now; st["big_pkts"] += 1
    if a.loss and rnd.random() < a.loss:
        pkt.drop(); st["loss_drops"] += 1
        if trace: trace.write(f"{now - t_start:.6f} {n} l {classify(pkt.get_payload())}\n")
        if lost_log: lost_log.write(f"{now - t_start:.6f} {classify(pkt.get_payload())}\n")
        return
    if rate:
        # Token bucket at `rate`, depth `burst`; tokens are accounted up to the previous departure (tok_at).
        t0 = max(now, tok_at)
        tok = min(burst, tokens + (t0 - tok_at) * rate)
        dep = t0 if tok >= n else t0 + (n - tok) / rate
        if dep - now > qlimit:
            pkt.drop(); st["queue_drops"] += 1
            if trace: trace.write(f"{now - t_start:.6f} {n} q {classify(pkt.get_payload())}\n")
            return
        tokens, tok_at = (tok - n if tok >= n else 0.0), dep
        w = (dep - now) * 1000
        if w > st["max_wait_ms"]: st["max_wait_ms"] = w
    else:
        dep = now
    due = dep + delay + (rnd.gauss(0, a.jitter_ms / 1000) if a.jitter_ms else 0)
    due = max(due, last_due, dep)
    last_due = due
    fifo.append((due, pkt, n))
    if trace: trace.write(f"{now - t_start:.6f} {n} d {classify(pkt.get_payload())}\n")
    if len(fifo) > st["max_held"]: st["max_held"] = len(fifo)


stop = []


def on_term(*_):
    stop.append(1)  # checked by the loop (raising here could land inside the C callback)


snap = []
signal.signal(signal.SIGUSR1, lambda *_: snap.append(1))  # write the counters so far to --stats
swaps = []
signal.signal(signal.SIGUSR2, lambda *_: swaps.append(1))  # swap the rate with --alt-rate-mbit
alt = a.alt_rate_mbit * 1e6 / 8 if a.alt_rate_mbit is not None else None


def write_stats():
    global last_big
    if a.stats:
        d = dict(st, max_wait_ms=round(st["max_wait_ms"], 2), max_lag_ms=round(st["max_lag_ms"], 2),
                 gap_ms=round(st["gap_ms"], 1))
        st["gap_ms"], last_big = 0.0, None
        with open(a.stats + ".tmp", "w") as f:
            json.dump(d, f)
        os.replace(a.stats + ".tmp", a.stats)


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
nfq = NetfilterQueue()
nfq.bind(a.queue, cb, max_len=65536, sock_len=8 << 20)
fd = nfq.get_fd()
end = t_start + a.secs
try:
    while True:
        now = clock()
        if now >= end or stop:
            break
        if swaps and alt is not None:
            swaps.clear()
            rate, alt = alt, rate
            # A new bottleneck starts with a full bucket and no backlog counted against it.
            tokens, tok_at = burst, now
            print(f"path-emulator rate {rate * 8 / 1e6:g} Mbit/s at {now:.3f}", flush=True)
        if snap:
            snap.clear(); write_stats()
            if a.seed is not None: rnd.seed(a.seed)
        while fifo and fifo[0][0] <= now:
            _, p, n = fifo.popleft()
            p.accept(); st["pkts_out"] += 1; st["bytes_out"] += n
            st["last_s"] = round(now - t_start, 3)
        timeout = min(0.2, max(0.0, fifo[0][0] - now)) if fifo else 0.2
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            nfq.run(block=False)
finally:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _, p, _n in fifo:
        p.drop()
    try:
        nfq.unbind()
    except Exception:
        pass
    write_stats()
    if trace: trace.close()
    if lost_log: lost_log.close()
    print("path-emulator", json.dumps(st), flush=True)
