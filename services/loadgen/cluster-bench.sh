#!/usr/bin/env bash
# fleetmq through 1, 2 and 3 cluster nodes on loopback, in one command:
# fan-in, fan-out and all-remote fan-in, QoS 0 and 1, measured by
# fleetmq-loadgen with publishers and subscribers spread over the nodes.
#
#   services/loadgen/cluster-bench.sh [--nodes 1,2,3] [--runs 1] [--size tiny|full]
#                                     [--profile release|debug] [--no-build]
#                                     [--fleetmq-bin PATH] [--loadgen-bin PATH]
#                                     [--database-url postgres://127.0.0.1:5432/test]
#
# Each cluster size gets a fresh PostgreSQL database (made beside
# --database-url, default $TEST_DATABASE_URL, and dropped afterwards), a
# private nats-server with JetStream in a temporary directory, and nodes on
# free ports (never 1883). Prints rate, losses, CPU per message of the
# nodes and of NATS, and per-node efficiency. Figures:
# services/loadgen/PERFORMANCE.md. Needs python3, psql and nats-server.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,16p' "$0"; exit 0; fi
exec python3 "$(dirname "${BASH_SOURCE[0]}")/cluster_bench.py" "$@"
