#!/usr/bin/env python3
"""fleetmq through 1, 2 and 3 cluster nodes: one command (issue 15).

Started by services/loadgen/cluster-bench.sh (see its header for usage).
For each cluster size it makes a fresh PostgreSQL database, starts a
private nats-server (JetStream in a temporary directory, a free port) and
N fleetmq nodes on free ports (never 1883), then runs fleetmq-loadgen with
publishers and subscribers spread over the nodes:

- fan-in: 50 publishers x 2,000 x 64 B, round-robin over the nodes, to one
  subscriber on node 1 (with N nodes, (N-1)/N of the messages cross nodes);
- fan-out: one publisher on node 1 to 100 subscribers round-robin over the
  nodes;
- remote fan-in (N >= 2): every publisher on node 2, the subscriber on
  node 1: all traffic crosses nodes, to set against the 1-node row.

Each row: delivered messages per second, messages lost, the CPU all nodes
spent per delivered message (utime+stime from /proc/PID/stat) and
nats-server's own, and per-node efficiency (deliveries per CPU second of
the busiest node). The nodes share this machine's cores with NATS and the
load generator, so rates are bounded by the machine, not by the cluster:
CPU per message is what predicts separate machines.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench
from bench import Broker, cpu_secs, log, loadgen_json, median

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"

SIZES = {
    # The suite's smoke run: debug binaries, seconds.
    "tiny": {"fan_in": (5, 40), "fan_out": (10, 20), "timeout": 60},
    "full": {"fan_in": (50, 2000), "fan_out": (100, 1000), "timeout": 600},
}


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL, env=bench.clean_env())


def with_database(url, name):
    """`url` with its database replaced by `name`."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


def printed_port(proc, logfile, marker, ready, within):
    """The port a process started on a port of its own choosing printed
    after `marker`, once it also printed `ready`: picking a free port here
    and passing it would race other processes to bind it."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        if proc.proc.poll() is not None:
            with open(logfile) as f:
                sys.exit(f"{proc.name} exited with {proc.proc.returncode}:\n{f.read()}")
        with open(logfile) as f:
            lines = f.read().splitlines()
        found = [line for line in lines if marker in line]
        if found and any(ready in line for line in lines):
            return int(found[0].rsplit(":", 1)[1].strip())
        time.sleep(0.1)
    sys.exit(f"{proc.name} did not print {marker!r} within {within:.0f} s; see {logfile}")


class Cluster:
    """nats-server and `n` fleetmq nodes on a fresh database."""

    def __init__(self, fleetmq, work, admin_url, n, queue):
        self.admin_url = admin_url
        self.database = f"fleetmq_cluster_bench_{os.getpid()}_{n}"
        psql(admin_url, f"DROP DATABASE IF EXISTS {self.database}")
        psql(admin_url, f"CREATE DATABASE {self.database}")
        db = with_database(admin_url, self.database)
        self.procs = []
        nats_log = os.path.join(work, f"nats-{n}.log")
        # -p -1: a port of the server's choosing, read from its log.
        self.nats = Broker("nats-server", [NATS, "-js", "-a", "127.0.0.1", "-p", "-1",
                                           "-sd", os.path.join(work, f"js-{n}")],
                           nats_log, None, None, None)
        self.procs.append(self.nats)
        nats_port = printed_port(self.nats, nats_log, "Listening for client connections on ",
                                 "Server is ready", within=30)
        self.nodes = []
        for i in range(1, n + 1):
            data = os.path.join(work, f"c{n}-node{i}")
            # Port 0 and the port the node prints: a port picked free here
            # could be taken by another process before the node binds it.
            argv = [fleetmq, "serve", "--data-dir", data, "--database-url", db,
                    "--nats-url", f"nats://127.0.0.1:{nats_port}", "--node-name", f"node-{i}",
                    "--mqtt-listen", "127.0.0.1:0", "--mqtts-listen", "127.0.0.1:0",
                    "--ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--allow-anonymous", "bench", *bench.bench_bounds(queue)]
            if i > 1:
                argv += ["--kek-file", os.path.join(work, f"c{n}-node1", "kek.hex")]
            logfile = os.path.join(work, f"c{n}-node{i}.log")
            node = Broker(f"node-{i}", argv, logfile, None, None, None)
            self.procs.append(node)
            node.port = printed_port(node, logfile, "fleetmq: mqtt listening on ",
                                     "fleetmq: http listening on ", within=60)
            node.http = printed_port(node, logfile, "fleetmq: http listening on ",
                                     "fleetmq: http listening on ", within=5)
            self.nodes.append(node)

    def show_logs(self, lines=30):
        """The end of every process's log, for a run that failed."""
        for p in self.procs:
            alive = "running" if p.proc.poll() is None else f"exited {p.proc.returncode}"
            with open(p.logfile) as f:
                tail = f.read().splitlines()[-lines:]
            log(f"--- {p.name} ({alive}), last {len(tail)} lines of {p.logfile}")
            for line in tail:
                log(line)

    def ports(self, which):
        return ",".join(str(self.nodes[i].port) for i in which)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        try:
            psql(self.admin_url, f"DROP DATABASE IF EXISTS {self.database}")
        except subprocess.CalledProcessError as e:
            log(f"dropping {self.database}: {e}")


def rows(n, size):
    """(label, loadgen args, publisher node indexes, subscriber node indexes)."""
    s = SIZES[size]
    p, m = s["fan_in"]
    subs, fm = s["fan_out"]
    every = list(range(n))
    out = []
    for q in (0, 1):
        common = ["--payload", "64", "--qos", str(q), "--timeout", str(s["timeout"])]
        out.append((f"fan-in {p}x{m} qos{q}",
                    ["--publishers", str(p), "--messages", str(m), "--subscribers", "1", *common],
                    every, [0]))
        out.append((f"fan-out 1->{subs} x{fm} qos{q}",
                    ["--publishers", "1", "--messages", str(fm), "--subscribers", str(subs),
                     *common], [0], every))
        if n >= 2:
            out.append((f"remote fan-in {p}x{m} qos{q}",
                        ["--publishers", str(p), "--messages", str(m), "--subscribers", "1",
                         *common], [1], [0]))
    return out


# Where a message can be dropped on the way, by metric family: the
# sending node's queue to NATS, the NATS subscription's buffer on the
# receiving node (slow consumer: a gap), and the subscriber's session.
DROP_METRICS = {
    "cluster_messages_dropped_total": "outbound",
    "cluster_slow_consumer_total": "nats",
    "mqtt_messages_dropped_total": "session",
}


def drops(node):
    """The node's drop counters summed per place (see DROP_METRICS)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in DROP_METRICS and not line.startswith("#"):
            place = DROP_METRICS[name]
            out[place] = out.get(place, 0) + float(line.rsplit(" ", 1)[1])
    return out


def measure(cluster, loadgen, label, argv, pubs, subs, timeout):
    pids = [node.proc.pid for node in cluster.nodes]
    drops_before = [drops(node) for node in cluster.nodes]
    before = [cpu_secs(pid) for pid in pids]
    nats_before = cpu_secs(cluster.nats.proc.pid)
    report = loadgen_json(loadgen, ["--port", str(cluster.nodes[0].port),
                                    "--publisher-ports", cluster.ports(pubs),
                                    "--subscriber-ports", cluster.ports(subs), *argv], timeout)
    spent = [cpu_secs(pid) - b for pid, b in zip(pids, before)]
    nats = cpu_secs(cluster.nats.proc.pid) - nats_before
    done = report["delivered"]
    per = (lambda secs: secs * 1e6 / done) if done else (lambda secs: None)
    dropped = {}
    for node, before in zip(cluster.nodes, drops_before):
        for place, n in drops(node).items():
            dropped[place] = dropped.get(place, 0) + n - before.get(place, 0)
    return {
        "rate": report["delivery_rate"],
        "lost": report["expected"] - done,
        "nodes_cpu_us": per(sum(spent)),
        "nats_cpu_us": per(nats),
        # Deliveries per CPU second of the busiest node: what one node of
        # this cluster would sustain on a core of its own.
        "per_node": done / max(spent) if max(spent) > 0 else None,
        "dropped": {k: int(v) for k, v in dropped.items() if v},
    }


def main():
    ap = argparse.ArgumentParser(description="fleetmq through 1, 2 and 3 cluster nodes")
    ap.add_argument("--nodes", default="1,2,3", help="cluster sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    bench.add_binary_args(ap)
    ap.add_argument("--database-url",
                    default=os.environ.get("TEST_DATABASE_URL",
                                           "postgres://127.0.0.1:5432/test"),
                    help="a PostgreSQL database to connect to; each cluster size gets a "
                         "fresh database beside it, dropped afterwards")
    args = ap.parse_args()
    sizes = sorted({int(x) for x in args.nodes.split(",") if x.strip()})
    if not sizes or min(sizes) < 1 or max(sizes) > 9 or args.runs < 1:
        ap.error("--nodes: sizes from 1 to 9; --runs at least 1")
    for tool in (NATS, shutil.which("psql") or "psql"):
        if not os.path.exists(tool):
            sys.exit(f"{tool} is missing: install the Debian nats-server and "
                     "postgresql-client packages")

    fleetmq, loadgen = bench.binaries(args)
    s = SIZES[args.size]
    p, m = s["fan_in"]
    queue = max(p * m, 10000)

    work = tempfile.mkdtemp(prefix="fleetmq-cluster-bench.")
    results = {}  # (label, n) -> [record per run]
    labels = []
    try:
        for run in range(1, args.runs + 1):
            for n in sizes:
                log(f"run {run}/{args.runs}: {n} node(s)")
                run_dir = os.path.join(work, f"run{run}")
                os.makedirs(run_dir, exist_ok=True)
                cluster = Cluster(fleetmq, run_dir, args.database_url, n, queue)
                try:
                    # Interest and leases settle before traffic.
                    time.sleep(1)
                    for label, argv, pubs, subs in rows(n, args.size):
                        if label not in labels:
                            labels.append(label)
                        log(f"== {label} on {n} node(s)")
                        try:
                            record = measure(cluster, loadgen, label, argv, pubs, subs,
                                             s["timeout"])
                        except SystemExit:
                            cluster.show_logs()
                            raise
                        results.setdefault((label, n), []).append(record)
                finally:
                    cluster.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"# fleetmq cluster, {args.size} size, {args.runs} run(s), median; cpu = utime+stime "
          "per delivered message; per-node = deliveries per CPU second of the busiest node")
    head = (f"{'scenario':<28} {'nodes':>5} {'rate/s':>10} {'lost':>7} {'nodes us/msg':>13} "
            f"{'nats us/msg':>12} {'per-node/s':>11}  dropped where")
    print(head)
    print("-" * len(head))
    for label in labels:
        for n in sizes:
            recs = results.get((label, n))
            if not recs:
                continue
            med = {k: median([r[k] for r in recs]) for k in recs[0]
                   if k not in ("lost", "dropped")}
            lost = sum(r["lost"] for r in recs)
            where = {}
            for r in recs:
                for place, count in r["dropped"].items():
                    where[place] = where.get(place, 0) + count
            where = " ".join(f"{place} {c}" for place, c in sorted(where.items())) or "-"
            print(f"{label:<28} {n:>5} {bench.fmt(med['rate'], '.0f'):>10} {lost:>7} "
                  f"{bench.fmt(med['nodes_cpu_us'], '.1f'):>13} "
                  f"{bench.fmt(med['nats_cpu_us'], '.1f'):>12} "
                  f"{bench.fmt(med['per_node'], '.0f'):>11}  {where}")
    print("lost: summed over runs (deliveries short of expected); dropped where: the nodes' "
          "counters (outbound: the sending node's queue to NATS; nats: NATS subscription "
          "buffers that overflowed, messages unknown; session: subscribers' queues)")


if __name__ == "__main__":
    main()
