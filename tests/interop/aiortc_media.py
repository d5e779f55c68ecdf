"""An aiortc peer (a WebRTC stack we did not write) that speaks Peerlink's signaling protocol
(DESIGN.md "Signaling protocol") and sends or receives media, for tests/e2e/media-aiortc.sh.

    python aiortc_media.py --server ws://HOST:PORT/ws --room R --send vp8|h264 [--duration S]
    python aiortc_media.py --server ws://HOST:PORT/ws --room R --recv [--duration S]

--send: a synthetic 320x240 video track (moving bars, --fps) pinned to one codec with
setCodecPreferences, and a 440 Hz Opus track, for --duration seconds from the first frame;
then it leaves the room. --recv: decodes every frame the other peer sends, until that peer
leaves or --duration (a hard limit) runs out. Either way it offers when the welcome lists a
peer and answers otherwise, uses only the iceServers of the welcome, and prints one JSON line
on standard output (frames produced or decoded, resolution, negotiated codec); progress goes
to standard error.
"""
import argparse
import asyncio
import base64
import fractions
import json
import math
import os
import re
import struct
import sys
import time
import urllib.parse

import av
from aiortc import (MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection,
                    RTCRtpSender, RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

T0 = time.monotonic()


def log(*args):
    print(f"[{time.monotonic() - T0:6.2f}] aiortc:", *args, file=sys.stderr, flush=True)


class WebSocket:
    """Just enough of an RFC 6455 client for JSON text frames (the venv has no WebSocket
    library, and plain ws:// on the test's own namespace is all the test needs)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise ValueError(f"only ws:// URLs: {url}")
        reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")
        return cls(reader, writer)

    def _frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)  # RFC 6455 §5.3: a client masks every frame
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def send(self, obj):
        self._frame(0x1, json.dumps(obj).encode())
        await self.writer.drain()

    async def recv(self):
        """The next text message as JSON, or None once the server closes."""
        parts = []
        while True:
            try:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                mask = await self.reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(await self.reader.readexactly(n)))
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._frame(0xA, data)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def close(self):
        try:
            self._frame(0x8, b"")
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a socket that may be gone already
            pass


class Paced(MediaStreamTrack):
    """Frames at their timestamps in real time, counted as the sender takes them."""

    def __init__(self, rate, step, stop_after):
        super().__init__()
        self.rate, self.step, self.stop_after = rate, step, stop_after
        self.produced = 0
        self.start = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.produced * self.step / self.rate
        if due - self.start >= self.stop_after:
            self.stop()
            raise MediaStreamError
        if due > now:
            await asyncio.sleep(due - now)
        frame = self.make(self.produced)
        frame.pts = self.produced * self.step
        frame.time_base = fractions.Fraction(1, self.rate)
        self.produced += 1
        return frame


class Bars(Paced):
    kind = "video"

    def __init__(self, width, height, fps, seconds):
        super().__init__(90000, 90000 // fps, seconds)
        self.width, self.height = width, height
        row = bytes(16 + (x * 7) % 220 for x in range(2 * width))
        self.row = row

    def make(self, n):
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for i, plane in enumerate(frame.planes):
            w, h, stride = plane.width, plane.height, plane.line_size
            if i == 0:
                rows = [self.row[(n * 3 + y) % w:(n * 3 + y) % w + w].ljust(stride, b"\0") for y in range(h)]
                plane.update(b"".join(rows))
            else:
                plane.update(bytes([(64 + 40 * i + n) % 256]) * (stride * h))
        return frame


class Tone(Paced):
    kind = "audio"

    def __init__(self, seconds):
        super().__init__(48000, 960, seconds)
        self.pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * t / 48000)))
                            for t in range(4800))  # 100 ms holds a whole number of periods

    def make(self, n):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        off = (n % 5) * 1920
        frame.planes[0].update(self.pcm[off:off + 1920])
        frame.sample_rate = 48000
        return frame


def first_codec(sdp, kind):
    """The first codec of SDP's m=KIND section, e.g. 'H264/90000', or '-'."""
    section = re.search(rf"^m={kind} \d+ \S+ (\d+).*?(?=^m=|\Z)", sdp, re.M | re.S)
    if not section:
        return "-"
    pt = section.group(1)
    m = re.search(rf"^a=rtpmap:{pt} (\S+)", section.group(0), re.M)
    return m.group(1) if m else "-"


def ice_servers(welcome):
    out = []
    for s in welcome.get("iceServers") or []:
        urls = s.get("urls")
        out.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    return out


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--name", default="aiortc")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--send", choices=["vp8", "h264"])
    mode.add_argument("--recv", action="store_true")
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=40, help="give up after this many seconds")
    a = ap.parse_args()

    result = {"mode": "send" if a.send else "recv", "errors": []}
    ws = await WebSocket.connect(a.server)
    await ws.send({"type": "join", "room": a.room, "name": a.name})
    welcome = await asyncio.wait_for(ws.recv(), 10)
    if not welcome or welcome.get("type") != "welcome":
        raise RuntimeError(f"no welcome: {welcome}")
    log(f"joined as {welcome['id']}, peers {[p['id'] for p in welcome.get('peers', [])]}, "
        f"iceServers {[s.get('urls') for s in welcome.get('iceServers') or []]}")
    result["joined"] = "second" if welcome.get("peers") else "first"
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(welcome)))

    tracks = {}
    if a.send:
        tracks = {"video": Bars(320, 240, a.fps, a.duration), "audio": Tone(a.duration)}
        want = {"vp8": "video/VP8", "h264": "video/H264"}[a.send]
        for kind, track in tracks.items():
            t = pc.addTransceiver(track, direction="sendonly")
            if kind == "video":
                caps = RTCRtpSender.getCapabilities("video").codecs
                t.setCodecPreferences([c for c in caps if c.mimeType in (want, "video/rtx")])
    else:
        for kind in ("video", "audio"):
            pc.addTransceiver(kind, direction="recvonly")

    got = {"video": 0, "audio": 0, "audio_samples": 0, "sizes": {}, "first": None, "last": None}
    done = asyncio.Event()
    consumers = []

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            got["first"] = got["first"] or now
            got["last"] = now
            if track.kind == "video":
                got["video"] += 1
                size = f"{frame.width}x{frame.height}"
                got["sizes"][size] = got["sizes"].get(size, 0) + 1
            else:
                got["audio"] += 1
                got["audio_samples"] += frame.samples * 48000 // (frame.sample_rate or 48000)

    @pc.on("track")
    def on_track(track):
        log(f"track {track.kind}")
        consumers.append(asyncio.ensure_future(consume(track)))

    @pc.on("connectionstatechange")
    def on_state():
        log(f"connection {pc.connectionState}")
        result.setdefault("states", []).append(pc.connectionState)
        if pc.connectionState == "connected":
            result["connected_s"] = round(time.monotonic() - T0, 2)
        if pc.connectionState in ("failed", "closed"):
            done.set()

    peer = None
    pending = []  # candidates that came before the remote description

    async def send_description():
        d = pc.localDescription
        await ws.send({"type": "signal", "to": peer, "data": {"description": {"type": d.type, "sdp": d.sdp}}})
        log(f"sent {d.type} (video {first_codec(d.sdp, 'video')}, audio {first_codec(d.sdp, 'audio')})")

    async def add_candidate(c):
        if not c or not c.get("candidate"):
            return  # end of candidates
        cand = candidate_from_sdp(c["candidate"].split(":", 1)[1])
        cand.sdpMid, cand.sdpMLineIndex = c.get("sdpMid"), c.get("sdpMLineIndex")
        await pc.addIceCandidate(cand)

    if welcome.get("peers"):
        peer = welcome["peers"][0]["id"]
        await pc.setLocalDescription(await pc.createOffer())
        await send_description()

    async def signaling():
        nonlocal peer
        while True:
            msg = await ws.recv()
            if msg is None:
                log("signaling closed")
                done.set()
                return
            t = msg.get("type")
            if t == "peer-joined":
                log(f"peer joined: {msg['peer']}")
                peer = peer or msg["peer"]["id"]
            elif t == "peer-left":
                log(f"peer left: {msg.get('id')}")
                if msg.get("id") == peer:
                    done.set()
            elif t == "error":
                log(f"server error: {msg}")
                result["errors"].append(f"server: {msg.get('code')}")
            elif t == "signal":
                peer = peer or msg.get("from")
                data = msg.get("data") or {}
                if "description" in data:
                    d = data["description"]
                    if d["type"] == "offer" and pc.signalingState != "stable":
                        # aiortc cannot roll back; it stays impolite and keeps its own offer.
                        log("glare: ignoring the remote offer")
                        result["errors"].append("glare")
                        continue
                    await pc.setRemoteDescription(RTCSessionDescription(d["sdp"], d["type"]))
                    log(f"got {d['type']} (video {first_codec(d['sdp'], 'video')}, "
                        f"audio {first_codec(d['sdp'], 'audio')})")
                    for c in pending:
                        await add_candidate(c)
                    pending.clear()
                    if d["type"] == "offer":
                        await pc.setLocalDescription(await pc.createAnswer())
                        await send_description()
                elif "candidate" in data:
                    if pc.remoteDescription is None:
                        pending.append(data["candidate"])
                    else:
                        await add_candidate(data["candidate"])

    sig = asyncio.ensure_future(signaling())
    try:
        if a.send:
            # Done when both tracks have run out (or the peer left, or the connection failed).
            async def tracks_over():
                while any(t.readyState == "live" for t in tracks.values()):
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # let the last packets and an RTCP report go out
            waiter = asyncio.ensure_future(tracks_over())
            await asyncio.wait([waiter, asyncio.ensure_future(done.wait())], timeout=a.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.wait_for(done.wait(), a.duration)
    except asyncio.TimeoutError:
        pass
    if sig.done() and sig.exception():
        result["errors"].append(f"signaling: {sig.exception()!r}")
    answer = pc.localDescription if pc.localDescription and pc.localDescription.type == "answer" else pc.remoteDescription
    result["codec"] = first_codec(answer.sdp, "video") if answer else "-"
    result["audio_codec"] = first_codec(answer.sdp, "audio") if answer else "-"
    if a.send:
        v, au = tracks["video"], tracks["audio"]
        result.update(video_sent=v.produced, audio_sent=au.produced, size=f"{v.width}x{v.height}",
                      sent_s=round(v.produced / a.fps, 2))
    else:
        span = (got["last"] - got["first"]) if got["first"] else 0
        result.update(video_decoded=got["video"], audio_frames=got["audio"],
                      audio_s=round(got["audio_samples"] / 48000, 2), sizes=got["sizes"], span_s=round(span, 2))
    try:
        await ws.send({"type": "leave"})
    except Exception:  # noqa: BLE001 - the server may be gone
        pass
    ws.close()
    sig.cancel()
    for c in consumers:
        c.cancel()
    await pc.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
