#!/usr/bin/env python3
# Prints a one-line summary of every UDP datagram on interface lo (run inside the namespace):
# wall-clock time, addresses, STUN (class, method, USERNAME, role attribute + tie-breaker,
# USE-CANDIDATE, ERROR-CODE) or DTLS (content type, epoch, handshake type). Needs root.
import socket, struct, sys, time
ETH_P_ALL = 3
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind((sys.argv[1] if len(sys.argv) > 1 else 'lo', 0))
out = open(sys.argv[2], 'w', buffering=1) if len(sys.argv) > 2 else sys.stdout
CLS = {0: 'req', 1: 'ind', 2: 'ok', 3: 'err'}
def stun(p):
    t, ln = struct.unpack('!HH', p[:4])
    cls = ((t >> 7) & 2) | ((t >> 4) & 1)
    method = (t & 0xF) | ((t >> 1) & 0x70) | ((t >> 2) & 0xF80)
    tx = p[8:20].hex()[:8]
    parts = [f'STUN {CLS[cls]} m={method:#x} tx={tx}']
    i = 20
    while i + 4 <= len(p):
        at, al = struct.unpack('!HH', p[i:i+4]); v = p[i+4:i+4+al]
        if at == 0x6: parts.append('user=' + v.decode(errors='replace'))
        elif at == 0x25: parts.append('USE-CANDIDATE')
        elif at == 0x8029: parts.append('CONTROLLED=%x' % struct.unpack('!Q', v)[0])
        elif at == 0x802a: parts.append('CONTROLLING=%x' % struct.unpack('!Q', v)[0])
        elif at == 0x9: parts.append('error=%d' % (v[2] * 100 + v[3]))
        elif at == 0x24: parts.append('prio=%d' % struct.unpack('!I', v)[0])
        i += 4 + ((al + 3) & ~3)
    return ' '.join(parts)
def dtls(p):
    ct, ver, ep, seq, ln = p[0], p[1:3].hex(), struct.unpack('!H', p[3:5])[0], int.from_bytes(p[5:11], 'big'), struct.unpack('!H', p[11:13])[0]
    d = f'DTLS ct={ct} ep={ep} seq={seq} len={ln}'
    if ct == 22 and ep == 0 and len(p) > 13:
        d += f' hs={p[13]}'
    return d
while True:
    pkt, addr = s.recvfrom(70000)
    if addr[2] == 4:  # PACKET_OUTGOING: lo shows each packet twice
        continue
    if len(pkt) < 14 + 20 or struct.unpack('!H', pkt[12:14])[0] != 0x0800:
        continue
    ip = pkt[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17:
        continue
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    sp, dp = struct.unpack('!HH', ip[ihl:ihl+4])
    pl = ip[ihl+8:]
    if not pl:
        continue
    b = pl[0]
    if b < 4 and len(pl) >= 20:
        what = stun(pl)
    elif 20 <= b <= 63 and len(pl) >= 13:
        what = dtls(pl)
    elif 128 <= b <= 191:
        what = f'RTP/RTCP len={len(pl)}'
    else:
        what = f'other len={len(pl)}'
    out.write(f'{time.time():.3f} {src}:{sp} > {dst}:{dp} {what}\n')
