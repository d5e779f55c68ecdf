#!/usr/bin/env python3
# Writes every IPv4 UDP datagram seen on an interface to a pcap file (link type RAW: each
# record is the IP packet), for the RTP/RTCP capture (capture.sh runs it inside its own network
# namespace, where all traffic between the two peer connections flows over lo). Needs root.
#   sniff.py IFACE OUT.pcap     runs until SIGTERM / SIGINT
import signal, socket, struct, sys, time

ETH_P_ALL, PACKET_OUTGOING, LINKTYPE_RAW = 3, 4, 101
iface, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind((iface, 0))
s.settimeout(0.2)
out = open(path, 'wb')
out.write(struct.pack('<IHHiIII', 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
count = 0
while not stop:
    try:
        frame, addr = s.recvfrom(70000)
    except socket.timeout:
        continue
    if addr[2] == PACKET_OUTGOING:  # lo shows each packet twice: keep the incoming copy
        continue
    if len(frame) < 14 + 28 or struct.unpack('!H', frame[12:14])[0] != 0x0800:
        continue
    ip = frame[14:]
    if ip[9] != 17:
        continue
    t = time.time()
    out.write(struct.pack('<IIII', int(t), int((t % 1) * 1e6), len(ip), len(ip)))
    out.write(ip)
    out.flush()
    count += 1
out.close()
print(f'sniff: {count} UDP datagrams written to {path}', file=sys.stderr)
