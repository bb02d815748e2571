#!/usr/bin/env bash
# fleetmq against Mosquitto 2, side by side on loopback, in one command:
# fan-in, fan-out, plain and TLS connect storms and memory per connection,
# measured by fleetmq-loadgen (rumqttc and rustls, shipped by neither broker).
#
#   services/loadgen/bench.sh [--scenarios fan-in,fan-out,connect,tls-connect,memory,tls-memory]
#                             [--runs 3] [--size tiny|full] [--profile release|debug]
#                             [--fleetmq-bin PATH] [--loadgen-bin PATH] [--no-build]
#                             [--json-out FILE]
#
# Builds fleetmq and fleetmq-loadgen (release by default) unless --no-build,
# starts both brokers on fresh free ports for every run (never 1883: the
# machine's own Mosquitto lives there), alternates which broker goes first,
# and prints a table of medians with fleetmq/Mosquitto ratios. Brokers and
# temporary files are removed on exit. Figures: services/loadgen/PERFORMANCE.md.
# Needs python3, openssl and /usr/sbin/mosquitto; the work is in bench.py.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,16p' "$0"; exit 0; fi
exec python3 "$(dirname "${BASH_SOURCE[0]}")/bench.py" "$@"
