#!/usr/bin/env bash
# Fan-in benchmark: fleetmq-loadgen (rumqttc, shipped by neither broker)
# against Mosquitto 2 and, with --fleetmq, against fleetmq, on loopback.
#
#   services/loadgen/bench.sh [--fleetmq] [--publishers N] [--messages M]
#                             [--payload BYTES] [--timeout SECS]
#
# Each broker gets a fresh free port and a temporary config or data dir; both
# are stopped and removed on exit. Port 1883 is never used: the machine's own
# Mosquitto lives there. Needs cargo, python3 and /usr/sbin/mosquitto.
set -euo pipefail

publishers=50
messages=2000
payload=64
timeout=120
with_fleetmq=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --fleetmq) with_fleetmq=1 ;;
        --publishers) publishers="$2"; shift ;;
        --messages) messages="$2"; shift ;;
        --payload) payload="$2"; shift ;;
        --timeout) timeout="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 64 ;;
    esac
    shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mosquitto_bin=/usr/sbin/mosquitto
work="$(mktemp -d -t fleetmq-bench.XXXXXX)"
pids=()

cleanup() {
    # Only the processes this script started, by pid.
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 - <<'PY'
import socket
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if port != 1883:
        print(port)
        break
PY
}

# wait_listening PORT PID NAME: up to 15 s for PORT to accept, while PID lives.
wait_listening() {
    local port="$1" pid="$2" name="$3"
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before listening; its log:" >&2
            cat "$work/$name.log" >&2 || true
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not listen on 127.0.0.1:$port within 15 s" >&2
    exit 1
}

# run_load NAME PORT QOS: one loadgen run, its JSON line saved for the table.
run_load() {
    local name="$1" port="$2" qos="$3"
    echo "== $name QoS $qos: $publishers publishers x $messages messages x $payload B" >&2
    # Exit 2 means connection errors mid-run; they are in the JSON, so keep going.
    "$target/release/fleetmq-loadgen" --port "$port" --qos "$qos" \
        --publishers "$publishers" --messages "$messages" --payload "$payload" \
        --subscribers 1 --timeout "$timeout" --json >"$work/$name-qos$qos.json" || [[ $? -eq 2 ]]
}

echo "building fleetmq-loadgen (release)" >&2
(cd "$root" && cargo build --release --quiet -p loadgen)
if [[ $with_fleetmq -eq 1 ]]; then
    echo "building fleetmq (release)" >&2
    (cd "$root" && cargo build --release --quiet -p fleetmq)
fi

# Mosquitto 2 with its defaults except where the queue bound would turn a
# throughput figure into a drop count: one subscriber must be able to hold a
# whole run's backlog (max_queued_messages defaults to 1000).
mosquitto_port="$(free_port)"
queue=$((publishers * messages))
cat >"$work/mosquitto.conf" <<CONF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages $queue
log_dest stderr
CONF
"$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=("$!")
wait_listening "$mosquitto_port" "$!" mosquitto
echo "$("$mosquitto_bin" -h 2>/dev/null | head -1 || true) on 127.0.0.1:$mosquitto_port" >&2
run_load mosquitto "$mosquitto_port" 0
run_load mosquitto "$mosquitto_port" 1

if [[ $with_fleetmq -eq 1 ]]; then
    fleetmq_port="$(free_port)"
    "$target/release/fleetmq" serve \
        --mqtt-listen "127.0.0.1:$fleetmq_port" \
        --allow-anonymous bench \
        --mqtts-listen 127.0.0.1:0 \
        --ws-listen 127.0.0.1:0 \
        --http-listen 127.0.0.1:0 \
        --data-dir "$work/fleetmq-data" >"$work/fleetmq.log" 2>&1 &
    pids+=("$!")
    wait_listening "$fleetmq_port" "$!" fleetmq
    echo "fleetmq on 127.0.0.1:$fleetmq_port" >&2
    run_load fleetmq "$fleetmq_port" 0
    run_load fleetmq "$fleetmq_port" 1
fi

python3 - "$work" "$with_fleetmq" <<'PY'
import json, sys
work, with_fleetmq = sys.argv[1], sys.argv[2] == "1"
brokers = ["mosquitto"] + (["fleetmq"] if with_fleetmq else [])

def load(broker, qos):
    with open(f"{work}/{broker}-qos{qos}.json") as f:
        return json.loads(f.read())

def ms(r, key):
    lat = r.get("latency")
    return f"{lat[key] / 1000:.2f}" if lat else "n/a"

first = load("mosquitto", 0)
print(f"\nfan-in: {first['publishers']} publishers x {first['messages']} messages x "
      f"{first['payload_bytes']} B -> {first['subscribers']} subscriber on bench/#\n")
print(f"{'broker':<10} {'qos':>3} {'pub msg/s':>11} {'deliv msg/s':>12} {'ratio':>7} "
      f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
runs = {}
for broker in brokers:
    for qos in (0, 1):
        r = runs[(broker, qos)] = load(broker, qos)
        flag = " (timed out)" if r["timed_out"] else ""
        print(f"{broker:<10} {qos:>3} {r['publish_rate']:>11.0f} {r['delivery_rate']:>12.0f} "
              f"{r['delivery_ratio']:>7.4f} {ms(r, 'p50_us'):>8} {ms(r, 'p99_us'):>8} "
              f"{len(r['errors']):>6}{flag}")
if with_fleetmq:
    print("\nfleetmq / mosquitto (above 1.0: fleetmq is faster)")
    for qos in (0, 1):
        m, f = runs[("mosquitto", qos)], runs[("fleetmq", qos)]
        def ratio(key):
            return f"{f[key] / m[key]:.2f}" if m[key] else "n/a"
        print(f"  qos {qos}: published {ratio('publish_rate')}x, delivered {ratio('delivery_rate')}x")
PY
