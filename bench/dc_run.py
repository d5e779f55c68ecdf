"""Runs one data-channel throughput transfer between two processes of a benchmark peer: the
sender prints one JSON line (its address and fingerprint, or an SDP offer) that goes to the
receiver, which prints one line back (address and fingerprint, or the answer); and
prints one JSON line: bytes, seconds (the receiver's first-to-last byte), MB/s and the
CPU-seconds both processes used per MB.

    python3 dc_run.py BYTES -- SENDER_CMD... -- RECEIVER_CMD...
"""
import json
import os
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    total = int(args[0])
    sep = [i for i, a in enumerate(args) if a == "--"]
    sender_cmd, receiver_cmd = args[sep[0] + 1:sep[1]], args[sep[1] + 1:]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for cmd in (sender_cmd, receiver_cmd)]
    # The sender speaks first (an offer, or its address); the receiver answers.
    for i in range(2):
        line = procs[i].stdout.readline()
        procs[1 - i].stdin.write(line)
        procs[1 - i].stdin.flush()
    cpu = 0.0
    results = [None, None]
    deadline = time.time() + 180
    remaining = {p.pid: i for i, p in enumerate(procs)}
    while remaining and time.time() < deadline:
        pid, status, usage = os.wait4(-1, 0)
        if pid in remaining:
            cpu += usage.ru_utime + usage.ru_stime
            results[remaining.pop(pid)] = os.waitstatus_to_exitcode(status)
    for p in procs:
        if p.poll() is None:
            p.kill()
    out = procs[1].stdout.read()
    if results != [0, 0]:
        print(json.dumps({"error": f"exit codes {results}", "output": out}))
        sys.exit(1)
    r = json.loads(out.strip().splitlines()[-1])
    mb = r["bytes"] / 1e6
    print(json.dumps({"bytes": r["bytes"], "seconds": r["seconds"], "mb_per_s": mb / r["seconds"],
                      "cpu_s_per_mb": cpu / mb}))


if __name__ == "__main__":
    main()
