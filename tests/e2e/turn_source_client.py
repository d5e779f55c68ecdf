"""A TURN client over UDP that checks where every answer comes from.

Usage: turn_source_client.py LOCAL_IP SERVER_IP PORT PEER_IP

Bound to LOCAL_IP, it sends to SERVER_IP:PORT an Allocate (expecting 401 with a nonce),
an authenticated Allocate (user test, password secret, realm example.test), and a
CreatePermission for a peer socket on PEER_IP; the peer then sends to the relayed address.
Every datagram the client gets must come from SERVER_IP:PORT; it exits 1 otherwise, or
when an answer is missing or not the expected one. Written for this test from RFC 8489 and
RFC 8656, with no other STUN code behind it.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys
import zlib

MAGIC = 0x2112A442
ALLOCATE, CREATE_PERMISSION, DATA_INDICATION = 0x0003, 0x0008, 0x0017
USER, PASSWORD, REALM = b"test", b"secret", b"example.test"


def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_address(ip, port, tid):
    packed = socket.inet_pton(socket.AF_INET6, ip)
    mask = struct.pack("!I", MAGIC) + tid
    xored = bytes(a ^ b for a, b in zip(packed, mask))
    return struct.pack("!BBH", 0, 2, port ^ (MAGIC >> 16)) + xored


def unxor_address(value, tid):
    family, port = value[1], struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    mask = struct.pack("!I", MAGIC) + tid
    raw = bytes(a ^ b for a, b in zip(value[4:], mask))
    return socket.inet_ntop(socket.AF_INET6 if family == 2 else socket.AF_INET, raw), port


def message(kind, tid, attrs, key=None):
    body = b"".join(attrs)
    if key is not None:
        # RFC 8489 §14.5: the length covers MESSAGE-INTEGRITY when it is computed.
        header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + tid
        body += attr(0x0008, hmac.new(key, header + body, hashlib.sha1).digest())
    header = struct.pack("!HHI", kind, len(body) + 8, MAGIC) + tid
    crc = (zlib.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF
    return header + body + attr(0x8028, struct.pack("!I", crc))


def parse(data):
    kind, length = struct.unpack("!HH", data[:4])
    attrs, at = {}, 20
    while at + 4 <= 20 + length:
        a, n = struct.unpack("!HH", data[at:at + 4])
        attrs.setdefault(a, data[at + 4:at + 4 + n])
        at += 4 + n + (4 - n % 4) % 4
    return kind, data[8:20], attrs


def main():
    local, server, port, peer_ip = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind((local, 0))
    client.settimeout(3)

    def call(kind, attrs, key=None):
        tid = os.urandom(12)
        client.sendto(message(kind, tid, attrs, key), (server, port))
        return receive(tid)

    def receive(tid=None):
        try:
            data, source = client.recvfrom(2048)
        except socket.timeout:
            sys.exit(f"FAIL nothing came back (sent to [{server}]:{port} from {local})")
        if (source[0], source[1]) != (server, port):
            sys.exit(f"FAIL a datagram came from [{source[0]}]:{source[1]}, not [{server}]:{port}")
        kind, got_tid, attrs = parse(data)
        if tid is not None and got_tid != tid:
            sys.exit("FAIL an answer to another transaction")
        return kind, got_tid, attrs

    # REQUESTED-TRANSPORT UDP and REQUESTED-ADDRESS-FAMILY IPv6 (the default is IPv4).
    transport = attr(0x0019, bytes([17, 0, 0, 0])) + attr(0x0017, bytes([2, 0, 0, 0]))
    kind, _, attrs = call(ALLOCATE, [transport])
    if kind != 0x0113 or 0x0015 not in attrs:
        sys.exit(f"FAIL first Allocate: expected 401 with a nonce, got type {kind:#06x}")
    nonce = attrs[0x0015]
    key = hashlib.md5(USER + b":" + REALM + b":" + PASSWORD).digest()
    auth = [attr(0x0006, USER), attr(0x0014, REALM), attr(0x0015, nonce)]
    kind, tid, attrs = call(ALLOCATE, [transport] + auth, key)
    if kind != 0x0103 or 0x0016 not in attrs:
        sys.exit(f"FAIL authenticated Allocate: expected success, got type {kind:#06x}, {attrs.get(0x0009)}")
    relayed = unxor_address(attrs[0x0016], tid)

    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.bind((peer_ip, 0))
    peer_port = peer.getsockname()[1]
    tid = os.urandom(12)
    permission = [attr(0x0012, xor_address(peer_ip, peer_port, tid))] + auth
    client.sendto(message(CREATE_PERMISSION, tid, permission, key), (server, port))
    kind, _, _ = receive(tid)
    if kind != 0x0108:
        sys.exit(f"FAIL CreatePermission: expected success, got type {kind:#06x}")

    peer.sendto(b"from the peer", relayed)
    kind, _, attrs = receive()
    if kind != DATA_INDICATION or attrs.get(0x0013) != b"from the peer":
        sys.exit(f"FAIL expected a Data indication with the peer's bytes, got type {kind:#06x}")
    print(f"allocate, permission and relayed data all came from [{server}]:{port}")


if __name__ == "__main__":
    main()
