#!/usr/bin/env python3
"""Watches the DTLS handshakes on some interfaces (run inside the matrix's namespace; needs
root) and writes one line per cleartext handshake record: the sending port, the record's
version, the handshake message and its fragment (offset+length of total), the datagram's
size; for a ClientHello the offered versions (supported_versions), suites and groups, for a
ServerHello the version and suite chosen. tests/e2e/interop-matrix.sh runs it with OBSERVE=FILE
to gather docs/interop.md's DTLS facts; the matrix's verdicts never depend on it.

    dtls-observe.py OUT IFACE...
"""
import select
import socket
import struct
import sys
import time

HS = {1: 'ClientHello', 2: 'ServerHello', 3: 'HelloVerifyRequest', 11: 'Certificate',
      12: 'ServerKeyExchange', 13: 'CertificateRequest', 14: 'ServerHelloDone',
      15: 'CertificateVerify', 16: 'ClientKeyExchange', 20: 'Finished', 8: 'EncryptedExtensions'}
GROUPS = {0x17: 'P-256', 0x18: 'P-384', 0x19: 'P-521', 0x1d: 'X25519', 0x1e: 'X448', 0x11ec: 'X25519MLKEM768',
          0x100: 'ffdhe2048', 0x101: 'ffdhe3072'}
FRAGMENTS = {}
FRAGMENT_BYTES = {}
VER = {0xfeff: '1.0', 0xfefd: '1.2', 0xfefc: '1.3'}


def extensions(b):
    out = {}
    i = 0
    while i + 4 <= len(b):
        t, n = struct.unpack('!HH', b[i:i + 4])
        out[t] = b[i + 4:i + 4 + n]
        i += 4 + n
    return out


def hello(kind, body):
    """Facts from a whole (unfragmented) ClientHello or ServerHello body."""
    try:
        i = 2 + 32
        sid = body[i]
        i += 1 + sid
        if kind == 1:
            cookie = body[i]
            i += 1 + cookie
            n = struct.unpack('!H', body[i:i + 2])[0]
            suites = n // 2
            i += 2 + n
            i += 1 + body[i]
            ext = extensions(body[i + 2:])
            vers = ext.get(43)
            offered = [VER.get(struct.unpack('!H', vers[j:j + 2])[0], hex(struct.unpack('!H', vers[j:j + 2])[0]))
                       for j in range(1, len(vers), 2)] if vers else []
            groups = ext.get(10, b'')[2:]
            gl = [GROUPS.get(g, hex(g)) for g in (struct.unpack('!H', groups[j:j + 2])[0] for j in range(0, len(groups), 2))]
            return (f' cookie={cookie} suites={suites} versions={",".join(offered) or "-"} groups={",".join(gl)}'
                    f' ext={",".join(str(t) for t in ext)}')
        suite = struct.unpack('!H', body[i:i + 2])[0]
        ext = extensions(body[i + 3 + 2:])
        chosen = VER.get(struct.unpack('!H', ext[43])[0]) if 43 in ext else None
        return f' suite={suite:#06x} chosen={chosen or VER.get(struct.unpack("!H", body[0:2])[0])} ext={",".join(str(t) for t in ext)}'
    except (IndexError, struct.error, KeyError):
        return ' (unparsed)'


def datagram(sport, dport, p, out):
    i = 0
    while i + 13 <= len(p):
        ct = p[i]
        ver = struct.unpack('!H', p[i + 1:i + 3])[0]
        epoch = struct.unpack('!H', p[i + 3:i + 5])[0]
        n = struct.unpack('!H', p[i + 11:i + 13])[0]
        rec = p[i + 13:i + 13 + n]
        if ct == 22 and epoch == 0 and len(rec) >= 12:
            t = rec[0]
            total = int.from_bytes(rec[1:4], 'big')
            off = int.from_bytes(rec[6:9], 'big')
            flen = int.from_bytes(rec[9:12], 'big')
            line = (f'{time.time():.3f} {sport}->{dport} rec={VER.get(ver, hex(ver))} {HS.get(t, t)} frag={off}+{flen}/{total}'
                    f' datagram={len(p)}')
            if t in (1, 2):
                # Reassembled first when it came in fragments (Firefox's ClientHello does).
                key = (sport, dport, t, rec[4:6])
                body = FRAGMENTS.setdefault(key, bytearray(total))
                body[off:off + flen] = rec[12:12 + flen]
                seen = FRAGMENT_BYTES[key] = FRAGMENT_BYTES.get(key, 0) + flen
                if seen == total:
                    line += hello(t, bytes(body))
            out.write(line + '\n')
        elif ct in (20, 21, 23) or epoch > 0:
            pass
        i += 13 + n


def main():
    out = open(sys.argv[1], 'w', buffering=1)
    socks = []
    for iface in sys.argv[2:]:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.bind((iface, 0))
        socks.append(s)
    seen = set()
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            frame, addr = s.recvfrom(65535)
            # Loopback frames are seen twice (outgoing and incoming): keep the incoming copy.
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            ip = frame[14:]
            if len(ip) < 28 or ip[9] != 17:
                continue
            ihl = (ip[0] & 15) * 4
            sport, dport = struct.unpack('!HH', ip[ihl:ihl + 4])
            payload = ip[ihl + 8:]
            if payload and 20 <= payload[0] <= 63:
                key = (sport, dport, payload[:32])
                if key not in seen:
                    seen.add(key)
                    datagram(sport, dport, payload, out)


main()
