"""aiortc <-> aiortc set-up time for bench/peer.sh: two RTCPeerConnections in one process,
from createOffer to the data channel open on both sides, ROUNDS rounds (no STUN server: its
default points outside). Prints {"setup_ms":[...],"median_ms"}.

    python aiortc_setup.py ROUNDS
"""
import asyncio
import json
import statistics
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection


async def one():
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opened_a, opened_b = asyncio.Event(), asyncio.Event()
    start = time.perf_counter()
    channel = a.createDataChannel("bench")
    channel.on("open", opened_a.set)

    @b.on("datachannel")
    def on_channel(ch):
        if ch.readyState == "open":
            opened_b.set()
        ch.on("open", opened_b.set)
        opened_b.set()

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.wait_for(asyncio.gather(opened_a.wait(), opened_b.wait()), 30)
    ms = (time.perf_counter() - start) * 1000
    await a.close()
    await b.close()
    return ms


async def main():
    rounds = int(sys.argv[1])
    ms = [await one() for _ in range(rounds)]
    print(json.dumps({"setup_ms": ms, "median_ms": statistics.median(ms)}))


asyncio.run(main())
