#!/usr/bin/env python3
"""Judges and prints the path checks scripts/lib/path-lab.sh's `path_check` measured:
  path_check.py TMP     (reads TMP/paths: "name loss rate_mbit one_way_delay_ms" lines, and each path's files)
ping's average RTT within 5% of 2 x DELAY_MS; iperf3 UDP driven past the bottleneck delivers
RATE_MBIT within 5% (IP bytes: 1472 bytes of payload in each 1500-byte packet). iperf3 UDP below
the rate (1499-byte packets): every packet it lost must be one the A>B emulator dropped (its
trace, TMP/NAME.emu0.trace), so that nothing else on the way (NFQUEUE's kernel queue, a socket
buffer) loses packets; the emulator's drop-tail drops of those packets (a burst from a late
iperf3) are printed and taken out of iperf3's count, and the rest of iperf3's losses must lie in
the exact binomial interval of the set loss that a correct path leaves only with probability 1e-4
(5e-5 each side; 5% of 0.5% would take ~700,000 packets to resolve). Exits 1 if a check fails.
Its load/text/tail helpers serve the scripts' other reports too."""
import json, math, re, sys

FALSE_ALARM = 1e-4  # the probability that a correct path fails the loss check


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


def binomial_interval(n, p, alpha=FALSE_ALARM):
    """The losses (lo, hi) out of n packets at loss p that a path of loss p stays within with
    probability at least 1 - alpha: P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2 (exact)."""
    if n <= 0 or p <= 0:
        return 0, 0
    lg = math.lgamma
    pmf = lambda k: math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p))
    lo, below = 0, 0.0
    while below + pmf(lo) <= alpha / 2:
        below += pmf(lo); lo += 1
    hi = min(n, int(n * p + 40 * math.sqrt(n * p) + 40))  # the mass above this is negligible
    above = sum(pmf(k) for k in range(hi + 1, min(n, hi + 2000) + 1))
    while hi > lo and above + pmf(hi) <= alpha / 2:
        above += pmf(hi); hi -= 1
    return lo, hi


def emulator_drops(c, size=1499):
    """The A>B emulator's random ('l') and drop-tail ('q') drops of packets of that IP size."""
    l = q = 0
    try:
        with open(f"{c}.emu0.trace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == str(size):
                    l += parts[2] == "l"; q += parts[2] == "q"
    except OSError:
        return None, None
    return l, q


def udp(c, name):
    end = load(f"{c}.{name}.json").get("end", {})
    return end.get("sum_received") or end.get("sum") or {}


def iperf3_error(c, name):
    """What iperf3 said of a failed run: with -J its error is in the JSON, not on stderr."""
    return " / ".join(x for x in (load(f"{c}.{name}.json").get("error"), tail(f"{c}.{name}.err")) if x)


def main(tmp):
    failed = 0
    print(f"{'path':>4} {'rttMs (set)':>14} {'rateMbit (set)':>16} {'loss% of packets (ok range) queueDrops extra':>46}  result")
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
            problems.append(f"rate {got_rate:.2f} Mbit/s, want {rate_mbit:g} ±5% ({iperf3_error(c, 'rate')})")
        u = udp(c, "loss")
        n, lost = u.get("packets", 0), u.get("lost_packets", 0)
        emu_l, emu_q = emulator_drops(c)
        lossf = "-"
        if not n:
            problems.append(f"no loss measurement ({iperf3_error(c, 'loss')})")
        elif emu_l is None:
            problems.append("no emulator trace")
        else:
            # iperf3 cannot see a drop after its last packet that arrived, so it may count fewer.
            if lost > emu_l + emu_q:
                problems.append(f"iperf3 lost {lost} packets, the emulator dropped {emu_l} + {emu_q}: "
                                f"{lost - emu_l - emu_q} lost outside it")
            random_lost = lost - emu_q  # the random loss comes first: it saw all n packets
            lo, hi = binomial_interval(n, loss)
            if not lo <= random_lost <= hi:
                problems.append(f"loss {random_lost} of {n} = {100 * random_lost / n:.3f}%, want {100 * loss:g}%: "
                                f"{lo}-{hi} ({100 * lo / n:.3f}-{100 * hi / n:.3f}%)")
            lossf = (f"{100 * random_lost / n:.3f} of {n} ({100 * lo / n:.2f}-{100 * hi / n:.2f})"
                     f" q{emu_q} x{lost - emu_l - emu_q}")
        rttf = f"{rtt:.1f}" if rtt is not None else "-"
        failed += bool(problems)
        print(f"{path:>4} {rttf + f' ({2 * delay:g})':>14} {f'{got_rate:.2f} ({rate_mbit:g})':>16} {lossf:>46}  "
              + ("ok" if not problems else "FAIL " + "; ".join(problems))
              + (f" (failed tries: {tail(c + '.tries', 6)})" if text(c + ".tries") else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
