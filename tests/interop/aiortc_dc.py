"""Our PeerConnection (crates/rtc/examples/rtc_probe.rs) against aiortc, a WebRTC stack we
did not write, with us as offerer and as answerer: descriptions cross over the probe's
standard input and output, a data channel opens, and a text and a 100 kB binary message go
each way with their SHA-256 checked on both sides.

    python aiortc_dc.py PATH/TO/rtc_probe BIND_IP

Run inside a network namespace whose only address is BIND_IP (tests/e2e/rtc-aiortc.sh):
aiortc gathers host candidates on every interface and gets no STUN server.
"""
import asyncio
import hashlib
import json
import sys

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

BINARY = bytes((i * 13 + 5) % 256 for i in range(100_000))


async def one_round(probe, bind_ip, we_offer):
    role = "offer" if we_offer else "answer"
    proc = await asyncio.create_subprocess_exec(
        probe, role, f"{bind_ip}:0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got = {"text": None, "binary": None}
    done = asyncio.Event()

    def wire(channel):
        @channel.on("open")
        def on_open():
            channel.send("hello from aiortc")
            channel.send(BINARY)

        @channel.on("message")
        def on_message(m):
            if isinstance(m, str):
                got["text"] = m
            else:
                got["binary"] = m
            if got["text"] is not None and got["binary"] is not None:
                done.set()

        if channel.readyState == "open":
            on_open()

    try:
        if we_offer:
            pc.on("datachannel", wire)
            offer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
            await pc.setLocalDescription(await pc.createAnswer())
        else:
            wire(pc.createDataChannel("chat"))
            await pc.setLocalDescription(await pc.createOffer())
        line = json.dumps({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}) + "\n"
        proc.stdin.write(line.encode())
        await proc.stdin.drain()
        if not we_offer:
            answer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(done.wait(), 35)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        out, err = out.decode(), err.decode()
        expected_binary = f"received binary: {len(BINARY)} bytes sha256 {hashlib.sha256(BINARY).hexdigest()}"
        ours_ok = "received: hello from aiortc" in out and expected_binary in out and proc.returncode == 0
        theirs_ok = got["text"] == "hello from peerlink" and got["binary"] is not None and \
            hashlib.sha256(got["binary"]).hexdigest() == hashlib.sha256(bytes((i * 7 % 251) for i in range(100_000))).hexdigest()
        pair = [l for l in err.splitlines() if l.startswith("selected pair:")]
        ok = ours_ok and theirs_ok
        print(f"{'ok  ' if ok else 'FAIL'} peerlink as {role}er vs aiortc: data channel both ways "
              f"({pair[0] if pair else 'no selected pair'}; aiortc got {got['text']!r} and "
              f"{len(got['binary'] or b'')} bytes)")
        if not ok:
            print(out, err)
        return ok
    except Exception as e:  # noqa: BLE001 - report any failure of the round
        if proc.returncode is None:
            proc.kill()
        out, err = await proc.communicate()
        print(f"FAIL peerlink as {role}er vs aiortc: {e!r}\n{out.decode()}\n{err.decode()}")
        return False
    finally:
        await pc.close()


async def main():
    probe, bind_ip = sys.argv[1], sys.argv[2]
    results = [await one_round(probe, bind_ip, we_offer) for we_offer in (True, False)]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


asyncio.run(main())
