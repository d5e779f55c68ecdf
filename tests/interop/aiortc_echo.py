"""aiortc (a WebRTC stack we did not write) against an echo peer (`peerlink echo`) in a room of
`peerlink serve`, for tests/e2e/echo-peers.sh: it joins ROOM with Peerlink's signaling
protocol (offers a "chat" data channel when the welcome lists a peer, answers otherwise; only
the welcome's iceServers, i.e. our own server), sends COUNT messages, text and binary mixed
and of many sizes (the same list as tests/browser/echo-peer.mjs), and checks that every one
comes back on that channel, in order, of the same type and byte for byte. Prints one JSON
line and exits 0 when all came back, 1 otherwise.

    python aiortc_echo.py WS_URL ROOM [COUNT [TIMEOUT_S]]
"""
import asyncio
import json
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from aiortc_media import WebSocket, ice_servers, log


def message(i):
    """Message i: binary when i % 3 == 1 or i % 7 == 0, else text; every 250th is 64 KiB."""
    if i % 250 == 1:
        return bytes((i * 7 + k * 13) & 255 for k in range(65536))
    if i % 3 == 1 or i % 7 == 0:
        return bytes((i * 7 + k * 13) & 255 for k in range(1 + (i * 131) % 4096))
    return f"echo {i} {'é✓漢' * (i % 7)}{'x' * ((i * 53) % 1500)}"


def describe(m):
    return f"text of {len(m)} chars" if isinstance(m, str) else f"binary of {len(m)} bytes"


async def run(url, room, count, timeout):
    t0 = time.monotonic()
    r = {"ok": False, "role": None, "sent": 0, "echoed": 0, "mismatch": None, "open_s": None, "done_s": None}
    expected = [message(i) for i in range(count)]
    finished = asyncio.Event()
    ws = await WebSocket.connect(url)
    await ws.send({"type": "join", "room": room, "name": "aiortc"})
    welcome = await asyncio.wait_for(ws.recv(), 10)
    if not welcome or welcome.get("type") != "welcome":
        raise RuntimeError(f"no welcome: {welcome}")
    log(f"joined as {welcome['id']}")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(welcome)))
    remote = None
    senders = []

    async def pump(channel):
        for i, m in enumerate(expected):
            while channel.bufferedAmount > 1 << 20 and channel.readyState == "open":
                await asyncio.sleep(0.005)
            if channel.readyState != "open":
                log(f"channel {channel.readyState} after {i} sent")
                return
            channel.send(m)
            r["sent"] += 1

    def wire(channel):
        def on_open():
            if r["open_s"] is not None:
                return  # one channel is enough: the first to open
            r["open_s"] = round(time.monotonic() - t0, 2)
            log(f'channel "{channel.label}" open')

            @channel.on("message")
            def on_message(m):
                i = r["echoed"]
                if r["mismatch"] is None and (i >= count or type(m) is not type(expected[i]) or m != expected[i]):
                    r["mismatch"] = {"index": i, "want": describe(expected[i]) if i < count else "nothing",
                                     "got": describe(m)}
                    finished.set()
                    return
                r["echoed"] += 1
                if r["echoed"] == count:
                    r["done_s"] = round(time.monotonic() - t0, 2)
                    finished.set()

            senders.append(asyncio.ensure_future(pump(channel)))

        channel.on("open", on_open)
        if channel.readyState == "open":
            on_open()

    pc.on("datachannel", wire)

    @pc.on("connectionstatechange")
    def on_state():
        log(f"connection {pc.connectionState}")
        if pc.connectionState in ("failed", "closed"):
            finished.set()

    async def describe_local():
        d = pc.localDescription
        await ws.send({"type": "signal", "to": remote, "data": {"description": {"type": d.type, "sdp": d.sdp}}})

    if welcome.get("peers"):
        r["role"] = "offerer"
        remote = welcome["peers"][0]["id"]
        wire(pc.createDataChannel("chat"))
        await pc.setLocalDescription(await pc.createOffer())
        await describe_local()
    else:
        r["role"] = "answerer"

    async def signaling():
        nonlocal remote
        while (msg := await ws.recv()) is not None:
            if msg.get("type") == "peer-left" and msg.get("id") == remote:
                log("the echo peer left")
                break
            if msg.get("type") != "signal":
                continue
            remote = remote or msg.get("from")
            data = msg.get("data") or {}
            if "description" in data:
                d = data["description"]
                await pc.setRemoteDescription(RTCSessionDescription(d["sdp"], d["type"]))
                if d["type"] == "offer":
                    await pc.setLocalDescription(await pc.createAnswer())
                    await describe_local()
            elif (data.get("candidate") or {}).get("candidate"):
                c = data["candidate"]
                cand = candidate_from_sdp(c["candidate"].split(":", 1)[1])
                cand.sdpMid, cand.sdpMLineIndex = c.get("sdpMid"), c.get("sdpMLineIndex")
                await pc.addIceCandidate(cand)
        finished.set()

    sig = asyncio.ensure_future(signaling())
    try:
        await asyncio.wait_for(finished.wait(), timeout)
    except asyncio.TimeoutError:
        log("timed out")
    if sig.done() and not sig.cancelled() and sig.exception():
        r["error"] = repr(sig.exception())
    r["ok"] = r["mismatch"] is None and r["sent"] == count and r["echoed"] == count
    for task in [sig, *senders]:
        task.cancel()
    ws.close()
    await pc.close()
    return r


def main():
    url, room = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 40
    r = asyncio.run(run(url, room, count, timeout))
    print(json.dumps(r), flush=True)
    sys.exit(0 if r["ok"] else 1)


if __name__ == "__main__":
    main()
