#!/usr/bin/env python3
"""Judges and prints the path checks scripts/lib/path-lab.sh's `path_check` measured:
  path_check.py TMP     (reads TMP/paths: "name loss rate_mbit one_way_delay_ms" lines, and each path's files)
ping's average RTT within 5% of 2 x DELAY_MS; iperf3 UDP driven past the bottleneck delivers
RATE_MBIT within 5% (IP bytes: 1472 bytes of payload in each 1500-byte packet); iperf3 UDP
below the rate loses the set fraction within 5% of it or 3 binomial standard deviations of
the sample, whichever is wider (a few thousand packets cannot resolve 5% of 1%). Exits 1 if a
check fails. Its load/text/tail helpers serve the scripts' other reports too."""
import json, math, re, sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return {}


def text(path):
    try:
        return open(path).read()
    except Exception:
        return ""


def tail(path, n=2):
    return " / ".join(text(path).strip().splitlines()[-n:])


def udp(c, name):
    end = load(f"{c}.{name}.json").get("end", {})
    return end.get("sum_received") or end.get("sum") or {}


def main(tmp):
    failed = 0
    print(f"{'path':>4} {'rttMs (set)':>14} {'rateMbit (set)':>16} {'loss% of packets (set±band)':>32}  result")
    for line in open(f"{tmp}/paths"):
        path, loss, rate_mbit, delay = line.split()
        loss, rate_mbit, delay, c = float(loss), float(rate_mbit), float(delay), f"{tmp}/{path}"
        problems = []
        m = re.search(r"= [\d.]+/([\d.]+)/", text(c + ".ping"))
        rtt = float(m.group(1)) if m else None
        if rtt is None or abs(rtt - 2 * delay) > 0.05 * 2 * delay:
            problems.append(f"ping RTT {rtt} ms, want {2 * delay:g} ±5% ({tail(c + '.ping')})")
        got_rate = udp(c, "rate").get("bits_per_second", 0) * 1500 / 1472 / 1e6
        if abs(got_rate - rate_mbit) > 0.05 * rate_mbit:
            problems.append(f"rate {got_rate:.2f} Mbit/s, want {rate_mbit:g} ±5% ({tail(c + '.rate.err')})")
        u = udp(c, "loss")
        n, lost = u.get("packets", 0), u.get("lost_packets", 0)
        got_loss = lost / n if n else None
        band = max(0.05 * loss, 3 * math.sqrt(loss * (1 - loss) / n)) if n else 0.0
        if got_loss is None:
            problems.append(f"no loss measurement ({tail(c + '.loss.err')})")
        elif abs(got_loss - loss) > band:
            problems.append(f"loss {100 * got_loss:.2f}% of {n}, want {100 * loss:g}% ±{100 * band:.2f}")
        lossf = f"{100 * got_loss:.2f} of {n} ({100 * loss:g}±{100 * band:.2f})" if got_loss is not None else "-"
        rttf = f"{rtt:.1f}" if rtt is not None else "-"
        failed += bool(problems)
        print(f"{path:>4} {rttf + f' ({2 * delay:g})':>14} {f'{got_rate:.2f} ({rate_mbit:g})':>16} {lossf:>32}  "
              + ("ok" if not problems else "FAIL " + "; ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
