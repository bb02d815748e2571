#!/usr/bin/env bash
# Memory per idle MQTT connection, fleetmq next to Mosquitto 2 (issue 16).
#
#   services/loadgen/conn-memory.sh [--connections N] [--hold SECS]
#                                   [--only fleetmq|mosquitto] [--no-build]
#                                   [--debug] [--tls] [--bytes-lines]
#                                   [--fleetmq-bin PATH --loadgen-bin PATH]
#
# For each broker: start it fresh (temporary config or data dir, free port,
# never 1883), read VmRSS from /proc/PID/status, open N plain MQTT 3.1.1
# connections (keep alive 60 s) with `fleetmq-loadgen idle`, wait for every
# CONNACK and 2 s more, read VmRSS again, then watch the broker's CPU time
# (utime+stime from /proc/PID/stat) for --hold seconds while the connections
# sit idle. With --tls the connections are MQTT over TLS without client
# certificates (fleetmq's mqtts listener, whose CA file it prints; Mosquitto
# with a P-256 server certificate made here by openssl). Prints (RSS after - RSS before) / N in KB per connection and the
# idle CPU in percent of one core. Release builds unless --debug (figures
# from a debug build are larger; compare like with like). Figures and
# history: services/loadgen/conn-memory.md.
#
# The load side alone, against any loopback broker:
#   fleetmq-loadgen idle --port P [--connections N] [--hold SECS]
#       [--keep-alive SECS] [--username U [--password P]]
#       [--tls-ca CA.pem [--tls-certs DIR]] [--tls-server-name NAME]
# prints "connected N in X.XXs" once all are CONNACKed and holds them for
# --hold seconds (0: until SIGINT/SIGTERM). With --tls-certs, connection n
# presents DIR/<n>.crt and DIR/<n>.key (PKCS#8) and uses DIR/<n>.id as its
# client id when that file exists. Needs cargo, python3, /usr/sbin/mosquitto.
set -euo pipefail

connections=5000
hold=10
only=""
build=1
profile=release
tls=0
# bench.sh's memory row: also print "BROKER BYTES_PER_CONNECTION" lines.
bytes_lines=0
fleetmq_bin=""
loadgen_bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connections) connections="$2"; shift ;;
        --hold) hold="$2"; shift ;;
        --only) only="$2"; shift ;;
        --no-build) build=0 ;;
        --debug) profile=debug ;;
        --tls) tls=1 ;;
        --bytes-lines) bytes_lines=1 ;;
        --fleetmq-bin) fleetmq_bin="$2"; build=0; shift ;;
        --loadgen-bin) loadgen_bin="$2"; build=0; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 64 ;;
    esac
    shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mosquitto_bin=/usr/sbin/mosquitto
fleetmq_bin="${fleetmq_bin:-$target/$profile/fleetmq}"
loadgen_bin="${loadgen_bin:-$target/$profile/fleetmq-loadgen}"
work="$(mktemp -d -t fleetmq-connmem.XXXXXX)"
pids=()

# Only the processes this script started, by pid; then the temporary files.
cleanup() {
    local pid
    for pid in "${pids[@]}"; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both the brokers and the load generator hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A port the kernel hands out (ephemeral range, so never 1883).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# up PORT PID NAME: waits up to 30 s for NAME (PID) to accept on PORT.
up() {
    local tries=300
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        kill -0 "$2" 2>/dev/null && ((tries-- > 0)) && { sleep 0.1; continue; }
        echo "$3 is not listening on 127.0.0.1:$1; its log:" >&2
        cat "$work/$3.log" >&2 || true
        exit 1
    done
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime + stime of PID in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID PORT: one idle run against a started broker.
measure() {
    local name="$1" pid="$2" port="$3"
    shift 3
    sleep 1
    local before after
    before="$(rss_kb "$pid")"
    "$loadgen_bin" idle --port "$port" \
        --connections "$connections" --hold 0 "$@" >"$work/$name-idle.out" 2>&1 &
    local gen=$!
    pids+=("$gen")
    for _ in $(seq 1200); do
        grep -q '^connected ' "$work/$name-idle.out" && break
        if ! kill -0 "$gen" 2>/dev/null; then
            echo "loadgen against $name failed:" >&2
            cat "$work/$name-idle.out" >&2
            exit 1
        fi
        sleep 0.1
    done
    sleep 2
    after="$(rss_kb "$pid")"
    local t0 t1 hz
    hz="$(getconf CLK_TCK)"
    t0="$(cpu_ticks "$pid")"
    sleep "$hold"
    t1="$(cpu_ticks "$pid")"
    kill -TERM "$gen" 2>/dev/null || true
    wait "$gen" 2>/dev/null || true
    python3 - "$name" "$connections" "$before" "$after" "$t0" "$t1" "$hz" "$hold" \
        "$(head -1 "$work/$name-idle.out")" "$bytes_lines" <<'PY'
import sys
name, n, before, after, t0, t1, hz, hold, line, bytes_lines = sys.argv[1:]
n, before, after = int(n), int(before), int(after)
cpu = (int(t1) - int(t0)) / int(hz) / int(hold) * 100
print(f"{name:<10} {n:>6} conns  RSS {before:>8} -> {after:>8} KB  "
      f"{(after - before) / n:>7.2f} KB/conn  idle CPU {cpu:5.2f}%  ({line})")
if bytes_lines == "1":
    print(f"{name} {(after - before) * 1024 / n:.0f}")
PY
}

if [[ $build -eq 1 ]]; then
    echo "building fleetmq and fleetmq-loadgen ($profile)" >&2
    flags=(--quiet -p loadgen -p fleetmq)
    [[ $profile == release ]] && flags+=(--release)
    (cd "$root" && cargo build "${flags[@]}")
fi

if [[ -z "$only" || "$only" == mosquitto ]]; then
    port="$(free_port)"
    cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest none
CONF
    extra=()
    if [[ $tls -eq 1 ]]; then
        (
            cd "$work"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout ca.key -out ca.pem -days 2 -subj /CN=conn-memory-ca
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout server.key -out server.csr -subj /CN=localhost
            printf 'subjectAltName=DNS:localhost\n' >san.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out server.pem -days 2 -extfile san.ext
        ) >/dev/null 2>&1
        # Mosquitto started as root reads its files as user mosquitto: a
        # throwaway key in a throwaway directory.
        chmod 755 "$work"
        chmod 644 "$work/server.key"
        printf 'cafile %s\ncertfile %s\nkeyfile %s\n' \
            "$work/ca.pem" "$work/server.pem" "$work/server.key" >>"$work/mosquitto.conf"
        extra=(--tls-ca "$work/ca.pem")
    fi
    "$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    up "$port" "$pid" mosquitto
    measure mosquitto "$pid" "$port" "${extra[@]}"
fi

if [[ -z "$only" || "$only" == fleetmq ]]; then
    port="$(free_port)"
    tls_port="$(free_port)"
    "$fleetmq_bin" serve \
        --mqtt-listen "127.0.0.1:$port" \
        --allow-anonymous idle \
        --mqtts-listen "127.0.0.1:$tls_port" \
        --ws-listen 127.0.0.1:0 \
        --http-listen 127.0.0.1:0 \
        --data-dir "$work/fleetmq-data" >"$work/fleetmq.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    up "$port" "$pid" fleetmq
    extra=()
    if [[ $tls -eq 1 ]]; then
        ca=""
        for _ in $(seq 100); do
            ca="$(sed -n 's/^fleetmq: mqtts ca-file //p' "$work/fleetmq.log" | head -1)"
            [[ -n $ca ]] && break
            sleep 0.1
        done
        port="$tls_port"
        extra=(--tls-ca "$ca")
    fi
    measure fleetmq "$pid" "$port" "${extra[@]}"
fi
