#!/usr/bin/env bash
# The Grafana dashboard (packaging/grafana-dashboard.json) queries only what `peerlink serve`
# exports: every metric name in its queries is in /metrics of a running server, and every
# label it groups by (`by (direction)`) is on that metric's samples. Also: the JSON parses,
# and every panel reads the dashboard's Prometheus data source variable.
#   dashboard-metrics.sh [PEERLINK]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh
peerlink=${1:-target/release/peerlink}
tmp=$(mktemp -d)
PIDS=()
trap 'kill_all; rm -rf "$tmp"' EXIT
metrics_port=$(free_port)
# A certificate, as a deployment has (its expiry is on the dashboard).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "/CN=peerlink.test" \
    -addext "subjectAltName=DNS:peerlink.test" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
# auto rooms (the SFU's metrics too), TURN, signaling, metrics: what the service runs.
"$peerlink" serve --http 127.0.0.1:0 --listen 127.0.0.1:0 --metrics "127.0.0.1:$metrics_port" \
    --cert "$tmp/cert.pem" --key "$tmp/key.pem" >"$tmp/out" 2>"$tmp/log" &
PIDS+=($!)
wait_for_line "$tmp/out" "metrics at http://" 10
curl -fsS "http://127.0.0.1:$metrics_port/metrics" >"$tmp/metrics"
# The certificate expiry gauge is the certificate's own notAfter.
expiry=$(sed -n 's/^peerlink_tls_certificate_expiry_timestamp_seconds //p' "$tmp/metrics")
not_after=$(date -d "$(openssl x509 -in "$tmp/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
if [ -n "$expiry" ] && [ "$expiry" = "$not_after" ]; then
    echo "ok   peerlink_tls_certificate_expiry_timestamp_seconds $expiry is the certificate's notAfter"
else
    echo "FAIL certificate expiry metric ${expiry:-missing}, the certificate's notAfter is $not_after"
    exit 1
fi
python3 - packaging/grafana-dashboard.json "$tmp/metrics" <<'PY'
import json, re, sys
dashboard = json.load(open(sys.argv[1]))
exported = {}
for line in open(sys.argv[2]):
    if line.startswith("#") or not line.strip():
        continue
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
    labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=", m.group(3) or ""))
    exported.setdefault(m.group(1), set()).update(labels)
queries = []
def walk(panels):
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))
failures = []
for panel in walk(dashboard["panels"]):
    if panel.get("type") == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        failures.append(f"panel {panel['title']!r} does not use the $datasource variable")
    for target in panel.get("targets", []):
        queries.append((panel["title"], target["expr"]))
for var in dashboard["templating"]["list"]:
    if var.get("type") == "query":
        queries.append((f"variable {var['name']}", var["definition"]))
names = set()
for title, expr in queries:
    for name in re.findall(r"\bpeerlink_[a-z0-9_]+", expr):
        names.add(name)
        if name not in exported:
            failures.append(f"{title!r} queries {name}, which /metrics does not export")
    for by, name in re.findall(r"by \(([a-z_, ]+)\) \(rate\((peerlink_[a-z0-9_]+)", expr):
        for label in (l.strip() for l in by.split(",")):
            if name in exported and label not in exported[name]:
                failures.append(f"{title!r} groups {name} by {label}, a label it does not have")
for failure in failures:
    print("FAIL " + failure)
if failures:
    sys.exit(1)
print(f"ok   every metric the dashboard queries is exported: {len(names)} metrics in {len(queries)} queries")
print(f"ok   {len(exported)} metrics exported; not on the dashboard: {', '.join(sorted(set(exported) - names)) or 'none'}")
PY
