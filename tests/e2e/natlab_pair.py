"""Two ice_probe agents in two namespaces of the NAT lab, signaled through this script:
each prints its credentials and candidates as one JSON line, which goes to the other's
standard input. Both send data until each has the other's message.

    python3 natlab_pair.py PROBE PREFIX EXPECT [PROBE OPTIONS...]

EXPECT is `srflx` (both ends must select srflx -> srflx) or `relay` (both ends' selected pairs
must involve a relayed candidate). Prints one line per side and exits 1 on any failure.
"""
import re
import subprocess
import sys
import tempfile


def main():
    probe, prefix, expect, *options = sys.argv[1:]
    roles = ["controlling", "controlled"]
    # Standard error goes to files: nothing to drain while the probes run.
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(2)]
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", f"{prefix}c{i + 1}", probe, roles[i], f"10.0.{i + 1}.2:0",
             "--exchange", "--timeout", "40", *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[i], text=True,
        )
        for i in range(2)
    ]
    lines = [p.stdout.readline() for p in procs]
    for i in range(2):
        procs[1 - i].stdin.write(lines[i])
        procs[1 - i].stdin.flush()
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        outs.append(out)
    errs = []
    for log in logs:
        log.seek(0)
        errs.append(log.read())
    ok = True
    for i in range(2):
        pair = re.findall(r"^selected pair: (\S+) -> (\S+) \((.*)\)$", errs[i], re.M)
        got = f"received: hello from {roles[1 - i]}" in outs[i]
        if expect == "srflx":
            path_ok = bool(pair) and pair[-1][:2] == ("srflx", "srflx")
        else:
            path_ok = bool(pair) and "relay" in pair[-1][:2]
        side_ok = procs[i].returncode == 0 and got and path_ok
        ok &= side_ok
        shown = f"{pair[-1][0]} -> {pair[-1][1]} ({pair[-1][2]})" if pair else "no selected pair"
        print(f"{'ok  ' if side_ok else 'FAIL'} {roles[i]} in {prefix}c{i + 1}: {shown}, "
              f"data {'received' if got else 'NOT received'}, exit {procs[i].returncode}")
        if not side_ok:
            print(errs[i], outs[i], file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
