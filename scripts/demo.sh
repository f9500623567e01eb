#!/usr/bin/env bash
# nbidle's demo on one machine: a JupyterLab supervised by nbidle, Prometheus
# scraping it with nbidle's generated rules, Alertmanager routing the idle
# alert to nbidle's webhook. The notebook is stopped after 2 idle minutes;
# the printed curl starts it again with its files. Ctrl-C stops everything.
#
#   NBIDLE_DEMO_AUTO=1  start the notebook again by itself and exit (for CI)
set -euo pipefail
cd "$(dirname "$0")/.."

API=http://127.0.0.1:9877/api/v1
TOKEN=demo-api-token
PROM=http://127.0.0.1:9390
work=data/demo
say() { printf '\033[1m[demo %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*"; }

for port in 9877 9390 9393 8888; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

say "installing what is missing (Prometheus, Alertmanager, JupyterLab)"
eval "$(bash scripts/test-deps.sh)"
say "building nbidle's JupyterLab extension into the demo's JupyterLab"
bash scripts/jupyterlab-ext.sh >/dev/null
export PATH="$(dirname "$NBIDLE_JUPYTER"):$PATH"
say "building nbidle"
cargo build --quiet --bin nbidle
nbidle=target/debug/nbidle

rm -rf "$work/state" "$work/prometheus" "$work/alertmanager" "$work"/*.log
mkdir -p "$work/workspace"
echo "written before the notebook was stopped" > "$work/workspace/hello.txt"

say "generating rules and Prometheus config from demo/nbidle.yaml"
$nbidle check --config demo/nbidle.yaml
$nbidle rules --config demo/nbidle.yaml > "$work/nbidle.rules.yml"
{
  cat <<YAML
global:
  scrape_interval: 10s
  evaluation_interval: 10s
rule_files:
  - nbidle.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:9393"]
YAML
  $nbidle manifests prometheus-scrape --config demo/nbidle.yaml | grep -v '^#'
  cat <<YAML
- job_name: nbidle
  static_configs:
  - targets: ["127.0.0.1:9877"]
YAML
} > "$work/prometheus.yml"

pids=()
cleanup() {
  trap - INT TERM EXIT
  say "stopping everything the demo started"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

am=$(command -v prometheus-alertmanager || command -v alertmanager)
"$am" --config.file=alertmanager/alertmanager.yml --storage.path="$work/alertmanager" \
  --web.listen-address=127.0.0.1:9393 --cluster.listen-address= >"$work/alertmanager.log" 2>&1 &
pids+=($!)
$nbidle serve --config demo/nbidle.yaml >"$work/nbidle.log" 2>&1 &
pids+=($!)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address=127.0.0.1:9390 >"$work/prometheus.log" 2>&1 &
pids+=($!)

status() { curl -fsS -H "Authorization: Bearer $TOKEN" "$API/notebooks/local/demo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
alerts() {
  curl -fsS "$PROM/api/v1/query" 2>/dev/null --data-urlencode 'query=ALERTS{notebook="demo"}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(", ".join(sorted(a["metric"]["alertname"]+" "+a["metric"]["alertstate"] for a in r)) or "none")' 2>/dev/null || echo "?"
}

say "nbidle      http://127.0.0.1:9877  (logs: $work/nbidle.log)"
say "Prometheus  $PROM  Alertmanager http://127.0.0.1:9393"
say "JupyterLab  http://127.0.0.1:8888/lab?token=demo-jupyter-token"
say "nobody uses the notebook: NotebookIdleSoon warns after 1 idle minute, NotebookIdle stops it after 2"
say "(open JupyterLab and run a cell to see the clock start again)"
last=""
while true; do
  s=$(status 2>/dev/null || echo "unknown")
  line="notebook: $s, alerts: $(alerts)"
  [ "$line" != "$last" ] && say "$line" && last=$line
  [ "$s" = stopped ] && break
  sleep 5
done
curl -fsS -H "Authorization: Bearer $TOKEN" "$API/notebooks/local/demo" | python3 -m json.tool
say "stopped by the idle alert; the workspace is still there:"
ls -l "$work/workspace"
start_cmd="curl -sS -X POST -H 'Authorization: Bearer $TOKEN' $API/notebooks/local/demo/start"
say "start it again with:"
echo "    $start_cmd"

if [ -n "${NBIDLE_DEMO_AUTO:-}" ]; then
  eval "$start_cmd" >/dev/null
  until [ "$(status)" = running ]; do sleep 1; done
  got=$(curl -fsS -H "Authorization: token demo-jupyter-token" http://127.0.0.1:8888/api/contents/hello.txt |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["content"].strip())')
  [ "$got" = "written before the notebook was stopped" ] || { say "workspace file changed: $got"; exit 1; }
  say "started again; Jupyter serves hello.txt from the same workspace. Demo passed."
  exit 0
fi
say "press Ctrl-C to stop everything"
while true; do
  s=$(status 2>/dev/null || echo "unknown")
  [ "$s" != "$last" ] && say "notebook: $s" && last=$s
  sleep 3
done
