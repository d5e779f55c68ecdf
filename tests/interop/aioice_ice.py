"""Our ICE agent (crates/ice/examples/ice_probe.rs) against aioice, an ICE implementation we
did not write, in both roles: credentials and candidates cross over the probe's standard
input and output, both sides run their checks, and one datagram of application data goes
each way on the selected pair.

    python aioice_ice.py PATH/TO/ice_probe BIND_IP

Run it inside a network namespace whose only address is BIND_IP (tests/e2e/ice-aioice.sh):
aioice gathers host candidates on every interface and uses no STUN server here.
"""
import asyncio
import json
import sys

import aioice


async def one_round(probe, bind_ip, we_control):
    role = "controlling" if we_control else "controlled"
    proc = await asyncio.create_subprocess_exec(
        probe, role, f"{bind_ip}:0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    conn = aioice.Connection(ice_controlling=not we_control, use_ipv6=False)
    try:
        await conn.gather_candidates()
        ours = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        theirs = {
            "ufrag": conn.local_username,
            "pwd": conn.local_password,
            "candidates": ["candidate:" + c.to_sdp() for c in conn.local_candidates],
        }
        proc.stdin.write((json.dumps(theirs) + "\n").encode())
        await proc.stdin.drain()
        conn.remote_username = ours["ufrag"]
        conn.remote_password = ours["pwd"]
        for line in ours["candidates"]:
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(line.removeprefix("candidate:")))
        await conn.add_remote_candidate(None)
        await asyncio.wait_for(conn.connect(), 20)
        await conn.send(b"hello from aioice")
        data = await asyncio.wait_for(conn.recv(), 10)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        ok = proc.returncode == 0 and data == b"hello from peerlink" and b"received: hello from aioice" in out
        pair = [l for l in err.decode().splitlines() if l.startswith("selected pair:")]
        print(f"{'ok  ' if ok else 'FAIL'} peerlink {role} vs aioice: connected, data both ways "
              f"({pair[0] if pair else 'no selected pair'}; aioice got {data!r})")
        if not ok:
            print(err.decode(), out.decode())
        return ok
    except Exception as e:  # noqa: BLE001 - report any failure as a failed check
        print(f"FAIL peerlink {role} vs aioice: {type(e).__name__}: {e}")
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
        print(err.decode())
        return False
    finally:
        await conn.close()


async def main():
    probe, bind_ip = sys.argv[1], sys.argv[2]
    results = [await one_round(probe, bind_ip, we_control) for we_control in (True, False)]
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


asyncio.run(main())
