#!/usr/bin/env bash
# Persistent-session benchmark (issue 14): QoS 1 fan-in, 50 publishers x 2,000
# x 64 B, to one clean-session subscriber and to one persistent one (3.1.1
# clean session 0: every message stored before its PUBACK), on SQLite and on
# Postgres (a fresh database per run on 127.0.0.1:5432, trust auth, created
# and dropped through `psql -d test`), a fresh release server per run, three
# runs alternating the order. BACKENDS="sqlite" skips Postgres.
#
#   services/loadgen/sessions-bench.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
(cd "$root" && cargo build --release --quiet -p fleetmq -p loadgen) || exit 1
bin="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf $work' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
one() { # backend mode run
  local backend=$1 mode=$2 n=$3 p db=() extra=()
  p=$(port); rm -rf $work/d; mkdir -p $work/d
  if [ $backend = postgres ]; then
    local name=bench14_$$_${n}_$RANDOM
    psql -q -h 127.0.0.1 -d test -c "create database $name" >/dev/null
    db=(--database-url "postgres://127.0.0.1:5432/$name")
  fi
  $bin/fleetmq serve --mqtt-listen 127.0.0.1:$p --allow-anonymous bench --mqtts-listen 127.0.0.1:0 \
     --ws-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir $work/d "${db[@]}" > $work/log 2>&1 &
  local pid=$!
  for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  [ $mode = persistent ] && extra=(--persistent-subscribers)
  $bin/fleetmq-loadgen --port $p --qos 1 --publishers 50 --messages 2000 --payload 64 --subscribers 1 --timeout 300 --json "${extra[@]}" \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('$backend $mode run$n', 'pub %.0f deliv %.0f msg/s ratio %.4f p99 %s errors %d' % (r['publish_rate'], r['delivery_rate'], r['delivery_ratio'], (r.get('latency') or {}).get('p99_us'), len(r['errors'])))"
  kill $pid; wait $pid 2>/dev/null
  [ $backend = postgres ] && psql -q -h 127.0.0.1 -d test -c "drop database $name" >/dev/null
}
for backend in ${BACKENDS:-sqlite postgres}; do
  for n in 1 2 3; do
    if [ $((n % 2)) = 1 ]; then one $backend clean $n; one $backend persistent $n; else one $backend persistent $n; one $backend clean $n; fi
  done
done
