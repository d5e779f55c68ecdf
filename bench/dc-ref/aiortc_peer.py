"""A data-channel benchmark peer on aiortc, speaking the line protocol of bench/dc_run.py
(the sender prints its offer, the receiver reads it and prints the answer). The sender sends
BYTES in MESSAGE-sized binary messages on a reliable ordered channel, keeping at most 4 MiB
buffered; the receiver answers "done" when it has them all and prints {"bytes","seconds"}
(first byte to last). No STUN server: aiortc's default points outside, so it gets none.

    python aiortc_peer.py send|recv BYTES MESSAGE
"""
import asyncio
import json
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription


async def read_line():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def print_description(pc):
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}), flush=True)


async def send(total, size):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("bench")
    channel.bufferedAmountLowThreshold = 1 << 20
    done = asyncio.Event()
    chunk = b"\x5a" * size
    sent = 0

    def pump():
        nonlocal sent
        while sent < total and channel.bufferedAmount < 4 << 20:
            n = min(size, total - sent)
            channel.send(chunk if n == size else chunk[:n])
            sent += n

    channel.on("open", pump)
    channel.on("bufferedamountlow", pump)
    channel.on("message", lambda m: done.set() if m == "done" else None)
    await pc.setLocalDescription(await pc.createOffer())
    print_description(pc)
    answer = json.loads(await read_line())
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    await done.wait()
    print(f"aiortc_peer: sender done after {sent} bytes", file=sys.stderr)
    await pc.close()


async def recv(total):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    finished = asyncio.Event()
    state = {"received": 0, "first": None, "seconds": 0.0}

    @pc.on("datachannel")
    def on_channel(channel):
        @channel.on("message")
        def on_message(m):
            now = time.perf_counter()
            if state["first"] is None:
                state["first"] = now
            state["received"] += len(m)
            if state["received"] >= total and not finished.is_set():
                state["seconds"] = now - state["first"]
                channel.send("done")
                finished.set()

    offer = json.loads(await read_line())
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    print_description(pc)
    await finished.wait()
    await asyncio.sleep(0.3)
    print(json.dumps({"bytes": state["received"], "seconds": state["seconds"]}), flush=True)
    await pc.close()


def main():
    role, total = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 65536
    coroutine = send(total, size) if role == "send" else recv(total)
    asyncio.run(asyncio.wait_for(coroutine, 170))


if __name__ == "__main__":
    main()
