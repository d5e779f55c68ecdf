#!/usr/bin/env python3
"""A receiver's DATA -> SACK delay, seen from its own network interface (bench/datachannel-sack.sh).

SCTP runs inside DTLS, so chunks cannot be read; sizes and times tell them apart. On a one-way
transfer the receiver gets full-sized packets (DATA; UDP payload >= BIG bytes, DTLS record) and
sends back small ones (SACKs; DTLS, payload < SMALL bytes: a SACK with a few gap blocks is ~70-120
bytes sealed; the rare heartbeat ack or the file's final `ack` message are too few to matter).
STUN (consent checks) is told apart by its first byte and ignored.

    capture IFACE LOCAL_IP OUT   records every UDP packet on IFACE to or from LOCAL_IP, with the
                                 kernel's receive/transmit stamp (SO_TIMESTAMPNS on a packet
                                 socket: the capture's own lateness on a busy host does not count),
                                 as "ns in|out payload-bytes first-byte" lines, until SIGTERM; then
                                 prints the socket's drop count to stderr.
    report FILE                  prints one JSON line:
      per_data_ms    for each incoming DATA packet, the time to the next outgoing SACK (what a
                     sender's RTT sample gains from this receiver);
      oldest_ms      for each SACK, the time since the earliest DATA packet that arrived after
                     the previous SACK (how long the oldest unacknowledged DATA waited);
      turnaround_ms  for each SACK, the time since the latest DATA packet before it (the
                     receiver's own processing; per_data_ms mixes it with the packet spacing,
                     since a SACK covers about two packets);
      median, p90, p99 and max of each, and how many of its samples were >= 100 ms
      (over_100ms: for oldest_ms and turnaround_ms, SACKs), DATA and SACK counts (data_per_sack), data_secs (first DATA
      packet to last: the script divides the file's size by it for goodput).
"""
import json
import math
import signal
import socket
import struct
import sys

BIG, SMALL = 1000, 300
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_TIMESTAMPNS, SO_RCVBUFFORCE = 35, 33


def capture(iface, local_ip, out_path):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))  # ETH_P_ALL: outgoing too
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((iface, 0))
    s.settimeout(0.2)  # so that SIGTERM is seen with no traffic
    local = socket.inet_aton(local_ip)
    out = open(out_path, "w")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("capturing", file=sys.stderr, flush=True)
    while not stop:
        try:
            pkt, anc, _, addr = s.recvmsg(96, socket.CMSG_SPACE(16))
        except (InterruptedError, socket.timeout):
            continue
        ts = None
        for level, kind, d in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", d[:16])
                ts = sec * 1_000_000_000 + nsec
        if ts is None or addr[1] != 0x0800 or len(pkt) < 29 or pkt[9] != 17:
            continue
        ihl = (pkt[0] & 15) * 4
        if len(pkt) < ihl + 9:
            continue
        total = struct.unpack("!H", pkt[2:4])[0]
        payload = total - ihl - 8
        if pkt[16:20] == local:
            way = "in"
        elif pkt[12:16] == local:
            way = "out"
        else:
            continue
        out.write(f"{ts} {way} {payload} {pkt[ihl + 8]}\n")
    out.close()
    packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    print(f"capture: {packets} packets, {drops} dropped by the socket", file=sys.stderr)


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    # Nearest rank: the smallest value with at least q of the samples at or below it.
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


def report(path):
    pending = []  # DATA arrival times since the last SACK
    first_data = last_data = None
    per_data, oldest, last = [], [], []
    data = sacks = 0
    for line in open(path):
        ts, way, size, first = line.split()
        ts, size, first = int(ts), int(size), int(first)
        if not 20 <= first <= 63:  # not DTLS (STUN, or nothing)
            continue
        if way == "in" and size >= BIG:
            data += 1
            pending.append(ts)
            first_data = first_data or ts
            last_data = ts
        elif way == "out" and size < SMALL:
            if pending:
                sacks += 1
                oldest.append((ts - pending[0]) / 1e6)
                last.append((ts - pending[-1]) / 1e6)
                per_data.extend((ts - t) / 1e6 for t in pending)
            pending = []
    r = {"data_secs": (last_data - first_data) / 1e9 if data > 1 else 0, "data": data, "sacks": sacks, "data_per_sack": round(data / sacks, 2) if sacks else None}
    for name, xs in (("per_data_ms", per_data), ("oldest_ms", oldest), ("turnaround_ms", last)):
        r[name] = {"median": pct(xs, 0.5), "p90": pct(xs, 0.9), "p99": pct(xs, 0.99), "max": max(xs, default=None)}
        r[name] = {k: round(v, 3) if v is not None else None for k, v in r[name].items()}
        r[name]["over_100ms"] = sum(x >= 100 for x in xs)
    print(json.dumps(r))


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(*sys.argv[2:5])
    else:
        report(sys.argv[2])
