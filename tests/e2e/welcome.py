#!/usr/bin/env python3
"""Joins a room on a peerlink signaling server as a browser would and checks its `welcome`.

    welcome.py URL [--ca FILE] [--connect HOST] [--check-turns]

URL is ws://HOST:PORT/ws or wss://NAME:PORT/ws. With --ca, a wss:// server's certificate must
verify against FILE for NAME (the URL's host); --connect HOST dials HOST instead of resolving
NAME (a test name with no DNS), keeping NAME for SNI, Host and verification.

Prints the welcome's iceServers URLs, one a line, then, with --check-turns, for each turns:
URL `turns-ok URL SHA256` once its server's certificate verified against --ca for the URL's
own host (dialled at --connect or the host itself), and `https-cert SHA256` for the
certificate of URL's server. Exits 1 on any failure, with the reason on standard error.
Standard library only: no third-party WebSocket client.
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import urllib.parse


def tls_context(ca):
    if ca is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca)


def dial(host, port, dial_host, tls, ca):
    sock = socket.create_connection((dial_host or host, port), timeout=10)
    if not tls:
        return sock, None
    wrapped = tls_context(ca).wrap_socket(sock, server_hostname=host)
    return wrapped, hashlib.sha256(wrapped.getpeercert(binary_form=True)).hexdigest()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def send_text(sock, text):
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def recv_text(sock):
    while True:
        first, second = recv_exact(sock, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", recv_exact(sock, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", recv_exact(sock, 8))[0]
        payload = recv_exact(sock, length)
        opcode = first & 0x0F
        if opcode == 1:
            return payload.decode()
        if opcode == 8:
            raise EOFError("closed by the server")


def welcome(url, ca, dial_host):
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    sock, cert = dial(parts.hostname, port, dial_host, tls, ca)
    key = base64.b64encode(os.urandom(16)).decode()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    sock.sendall(
        (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("closed during the upgrade")
        response += chunk
    status = response.split(b"\r\n", 1)[0].decode()
    if " 101 " not in status + " ":
        raise RuntimeError(f"no WebSocket upgrade: {status}")
    send_text(sock, json.dumps({"type": "join", "room": "welcome-check", "name": "welcome.py"}))
    while True:
        message = json.loads(recv_text(sock))
        if message.get("type") == "welcome":
            sock.close()
            return message, cert


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    url, ca, dial_host, check_turns = args[0], None, None, False
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "--ca":
            ca = rest.pop(0)
        elif flag == "--connect":
            dial_host = rest.pop(0)
        elif flag == "--check-turns":
            check_turns = True
        else:
            print(f"unknown argument {flag}", file=sys.stderr)
            return 2
    try:
        message, cert = welcome(url, ca, dial_host)
    except (OSError, EOFError, RuntimeError, ssl.SSLError) as e:
        print(f"welcome.py: {url}: {e}", file=sys.stderr)
        return 1
    urls = [u for server in message.get("iceServers", []) for u in server.get("urls", [])]
    for u in urls:
        print(u)
    if cert:
        print(f"https-cert {cert}")
    if not check_turns:
        return 0
    turns = [u for u in urls if u.startswith("turns:")]
    if not turns:
        print("welcome.py: no turns: URL in welcome", file=sys.stderr)
        return 1
    for u in turns:
        hostport = u[len("turns:"):].split("?", 1)[0]
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]")
        try:
            sock, digest = dial(host, int(port), dial_host, True, ca)
            sock.close()
        except (OSError, ssl.SSLError) as e:
            print(f"welcome.py: {u}: the TURN server's certificate does not verify for {host}: {e}", file=sys.stderr)
            return 1
        print(f"turns-ok {u} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
