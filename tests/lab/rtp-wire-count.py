#!/usr/bin/env python3
"""Counts the RTP and RTCP packets that arrive on network interfaces, from the parts of SRTP and
SRTCP that stay in clear (RFC 3711 §3.1, §3.4: the RTP header; the first 8 bytes of an RTCP
compound packet), so a test can see what a peer put on the wire before the path lost any of it.

  rtp-wire-count.py --secs 60 --out counts.json IFACE...     (root; run in the namespace)

Per interface, packets the interface received (not those it sent); TURN ChannelData is unwrapped
(and counted as "relayed"):
  rtp:  {"SSRC/PT": {"packets": n, "padding": n_with_P_bit, "bytes": n}}
  rtcp: {"PT/FMT": n} for the first packet of each compound (with reduced-size RTCP, RFC 5506,
        a NACK is 205/1, a PLI 206/1, transport-wide feedback 205/15, a receiver report 201/x)
  other: {"PROTO DST:PORT": n} for every other IPv4 packet (STUN, DTLS, signaling, strays)
SIGTERM (or --secs) ends it; the JSON is written then.
"""
import argparse, json, os, select, signal, socket, struct, time

ap = argparse.ArgumentParser()
ap.add_argument("--secs", type=float, default=120)
ap.add_argument("--out", required=True)
ap.add_argument("ifaces", nargs="+")
a = ap.parse_args()

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
socks = {}
for name in a.ifaces:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((name, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    socks[s.fileno()] = (name, s)
counts = {name: {"rtp": {}, "rtcp": {}, "other": {}} for name in a.ifaces}
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
signal.signal(signal.SIGINT, lambda *_: stop.append(1))


def count(c, pkt):
    if len(pkt) < 14 + 20 or struct.unpack("!H", pkt[12:14])[0] != ETH_P_IP:
        return
    ip = pkt[14:]
    ihl = (ip[0] & 15) * 4
    p = ip[ihl + 8:]
    if ip[9] == 17 and len(p) >= 4 and 64 <= p[0] <= 79:  # TURN ChannelData (RFC 8656 §12.4): relayed
        c["relayed"] = c.get("relayed", 0) + 1
        p = p[4:4 + struct.unpack("!H", p[2:4])[0]]
    if ip[9] != 17 or len(p) < 12 or not 128 <= p[0] <= 191:  # RFC 7983: RTP and RTCP
        dst = socket.inet_ntoa(ip[16:20])
        port = struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] if ip[9] in (6, 17) and len(ip) >= ihl + 4 else 0
        key = f"{ {1: 'icmp', 6: 'tcp', 17: 'udp'}.get(ip[9], ip[9])} {dst}:{port}"
        c["other"][key] = c["other"].get(key, 0) + 1
        return
    pt = p[1]
    if 192 <= pt <= 223:
        key = f"{pt}/{p[0] & 31}"
        c["rtcp"][key] = c["rtcp"].get(key, 0) + 1
        return
    ssrc = struct.unpack("!I", p[8:12])[0]
    key = f"{ssrc}/{pt & 127}"
    e = c["rtp"].setdefault(key, {"packets": 0, "padding": 0, "bytes": 0})
    e["packets"] += 1
    e["bytes"] += len(p)
    if p[0] & 0x20:
        e["padding"] += 1


end = time.monotonic() + a.secs
while not stop and time.monotonic() < end:
    r, _, _ = select.select(list(socks), [], [], 0.2)
    for fd in r:
        name, s = socks[fd]
        while True:
            try:
                pkt, addr = s.recvfrom(70000, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if addr[2] != PACKET_OUTGOING:
                count(counts[name], pkt)
with open(a.out + ".tmp", "w") as f:
    json.dump(counts, f)
os.replace(a.out + ".tmp", a.out)
