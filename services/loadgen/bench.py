#!/usr/bin/env python3
"""fleetmq against Mosquitto, side by side on loopback: one command.

Started by services/loadgen/bench.sh (see its header for usage). Starts
Mosquitto (/usr/sbin/mosquitto) and fleetmq on free ports (never 1883),
runs the scenarios with fleetmq-loadgen, alternating which broker goes first
on each run, and prints one table: the median over runs of the rate, the CPU
the broker process spent per message or per connect (utime+stime from
/proc/PID/stat), the memory per connection, and the fleetmq/Mosquitto ratio.

Certificates for the TLS connect storm: fleetmq's are issued by its REST API
(a tenant, one device per connection, POST .../certificates with a
platform-admin token from `fleetmq admin token`); Mosquitto's by openssl
(an ECDSA P-256 CA, server certificate and one client certificate per
connection; require_certificate and use_identity_as_username on).

Memory per connection comes from services/loadgen/conn-memory.sh when that
script is present (see memory_hook below); otherwise the row says n/a.
Memory per TLS connection (tls-memory) is measured here: each broker fresh,
N idle connections over TLS, each presenting its own client certificate
(the same certificates as the TLS connect storm), RSS growth / N.
"""

import argparse
import concurrent.futures
import http.client
import json
import resource
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOSQUITTO = "/usr/sbin/mosquitto"
SCENARIOS = ["fan-in", "fan-out", "connect", "tls-connect", "memory", "tls-memory"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Workload per size. tiny: the suite's smoke run (seconds, debug build);
# full: the figures in PERFORMANCE.md.
SIZES = {
    "tiny": {
        "fan_in": (5, 40, 64),  # publishers, messages each, payload bytes
        "fan_out": [(10, 20)],  # (subscribers, messages) of one publisher
        "connects": 20,
        "concurrency": 5,
        "memory": 50,
        "timeout": 60,
    },
    "full": {
        "fan_in": (50, 2000, 64),
        "fan_out": [(100, 1000), (1000, 100)],
        "connects": 5000,
        "concurrency": 100,
        "memory": 5000,
        "timeout": 600,
    },
}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 1883:
            return port


def wait_listening(port, proc, name, logfile, within=30.0):
    until = time.monotonic() + within
    while time.monotonic() < until:
        if proc.poll() is not None:
            with open(logfile) as f:
                sys.exit(f"{name} exited with {proc.returncode} before listening:\n{f.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} did not listen on 127.0.0.1:{port} within {within:.0f} s")


def clean_env():
    """The caller's environment without FLEETMQ_*: only our flags configure
    the server (a stray FLEETMQ_DATA_DIR or listener would change the run)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETMQ_")}


def cpu_secs(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name is in parentheses and may hold spaces: split after it.
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5); index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Broker:
    """A broker process this script started; stopped by its pid only."""

    def __init__(self, name, argv, logfile, port, tls_port, ca):
        self.name, self.port, self.tls_port, self.ca = name, port, tls_port, ca
        self.logfile = logfile
        self.log = open(logfile, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=clean_env())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- Mosquitto -------------------------------------------------------------


def openssl(*argv):
    subprocess.run(["openssl", *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def mosquitto_certs(work, count):
    """CA, server certificate (localhost, 127.0.0.1) and `count` client
    certificates, all ECDSA P-256, by openssl."""
    d = os.path.join(work, "mosquitto-pki")
    clients = os.path.join(d, "clients")
    os.makedirs(clients)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca, ca_key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench-ca")
    openssl("req", "-x509", *ec, "-keyout", os.path.join(d, "server.key"),
            "-out", os.path.join(d, "server.crt"), "-CA", ca, "-CAkey", ca_key, "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:FALSE")

    def one(i):
        name = f"dev{i:05d}"
        openssl("req", "-x509", *ec, "-keyout", os.path.join(clients, f"{name}.key"),
                "-out", os.path.join(clients, f"{name}.crt"), "-CA", ca, "-CAkey", ca_key,
                "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:FALSE",
                "-addext", "extendedKeyUsage=clientAuth")

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, range(count)))
    return ca, clients


def start_mosquitto(work, run, queue, pki):
    port, tls_port = free_port(), free_port()
    d = os.path.join(work, "mosquitto-pki")
    conf = os.path.join(work, f"mosquitto-{run}.conf")
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        # One subscriber must be able to hold a whole run's backlog: the
        # default bound (1000) would turn a throughput figure into drops.
        f"max_queued_messages {queue}",
        "log_dest stderr",
        f"listener {port} 127.0.0.1",
    ]
    if os.geteuid() == 0:
        # As root Mosquitto drops to the `mosquitto` user before it loads the
        # TLS key, which lives in our 0700 work dir: stay who we are.
        lines.insert(0, f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    if pki:
        lines += [
            f"listener {tls_port} 127.0.0.1",
            f"cafile {pki[0]}",
            f"certfile {d}/server.crt",
            f"keyfile {d}/server.key",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    logfile = os.path.join(work, f"mosquitto-{run}.log")
    b = Broker("mosquitto", [MOSQUITTO, "-c", conf], logfile, port, tls_port, pki[0] if pki else None)
    wait_listening(port, b.proc, "mosquitto", logfile)
    if pki:
        wait_listening(tls_port, b.proc, "mosquitto", logfile)
    return b


# --- fleetmq ---------------------------------------------------------------


def bench_bounds(queue):
    """fleetmq flags for benchmark bounds as large as Mosquitto's, not smaller
    defaults that would count as losses: queues hold a run's backlog, a storm
    from one address may have `concurrency` handshakes pending, provisioning
    is not rate limited."""
    return [
        "--mqtt-max-queued-messages", str(queue),
        "--mqtt-max-queued-bytes", str(queue * 1024),
        "--mqtt-max-tenant-queued-messages", str(queue * 4),
        "--mqtt-max-tenant-queued-bytes", str(queue * 4096),
        # Everything comes from 127.0.0.1: a 1 -> 1000 fan-out connects its
        # subscribers at once, so the per-address bound (64) would refuse it.
        "--mqtt-max-connections", "20000",
        "--mqtt-max-pending-connects", "10000",
        "--mqtt-max-pending-connects-per-address", "10000",
        "--rate-limit", "off",
    ]


def start_fleetmq(bin_, work, run, queue):
    port, tls_port = free_port(), free_port()
    data = os.path.join(work, "fleetmq-data")
    logfile = os.path.join(work, f"fleetmq-{run}.log")
    argv = [
        bin_, "serve", "--data-dir", data,
        "--mqtt-listen", f"127.0.0.1:{port}",
        "--mqtts-listen", f"127.0.0.1:{tls_port}",
        "--ws-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0",
        "--allow-anonymous", "bench", *bench_bounds(queue),
    ]
    b = Broker("fleetmq", argv, logfile, port, tls_port, None)
    wait_listening(port, b.proc, "fleetmq", logfile)
    b.ca, b.http = None, None
    until = time.monotonic() + 30
    while (b.ca is None or b.http is None) and time.monotonic() < until:
        with open(logfile) as f:
            for line in f:
                if line.startswith("fleetmq: mqtts ca-file "):
                    b.ca = line.split("ca-file ", 1)[1].strip()
                if line.startswith("fleetmq: http listening on "):
                    b.http = line.split("listening on ", 1)[1].strip()
        time.sleep(0.1)
    if b.ca is None or b.http is None:
        sys.exit(f"fleetmq did not print its ca-file and http lines; see {logfile}")
    wait_listening(tls_port, b.proc, "fleetmq", logfile)
    return b


def fleetmq_certs(bin_, work, broker, count):
    """A tenant `storm` with devices dev00000.. and one certificate each,
    issued by fleetmq's REST API, written as NAME.crt / NAME.key."""
    out = os.path.join(work, "fleetmq-clients")
    os.makedirs(out)
    token = subprocess.run(
        [bin_, "admin", "token", "--role", "platform-admin", "--ttl", "2h",
         "--data-dir", os.path.join(work, "fleetmq-data")],
        check=True, capture_output=True, text=True, env=clean_env()).stdout.strip()
    host, port = broker.http.rsplit(":", 1)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    def post(conn, path, body):
        conn.request("POST", path, json.dumps(body), headers)
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"POST {path}: {r.status} {data[:300]!r}")
        return json.loads(data)

    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    post(conn, "/v1/tenants", {"id": "storm", "name": "Connect storm"})
    conn.close()

    def batch(indexes):
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in indexes:
            name = f"dev{i:05d}"
            post(c, "/v1/tenants/storm/devices", {"id": name})
            cert = post(c, f"/v1/tenants/storm/devices/{name}/certificates", {})
            with open(os.path.join(out, f"{name}.crt"), "w") as f:
                f.write(cert["certificate_pem"])
            with open(os.path.join(out, f"{name}.key"), "w") as f:
                f.write(cert["private_key_pem"])
        c.close()

    workers = 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(batch, [range(w, count, workers) for w in range(workers)]))
    return out


# --- memory hook -----------------------------------------------------------


def memory_hook(loadgen, fleetmq, connections):
    """Memory per connection, {broker: bytes}, from conn-memory.sh.

    The hook: when services/loadgen/conn-memory.sh exists it is run as
        conn-memory.sh --connections N --hold 2 --bytes-lines --fleetmq-bin PATH --loadgen-bin PATH
    and every stdout line `BROKER BYTES_PER_CONNECTION` (broker `fleetmq` or
    `mosquitto`) is taken. Without the script, or if it fails, memory is n/a.
    """
    script = os.path.join(ROOT, "services", "loadgen", "conn-memory.sh")
    if not os.path.exists(script):
        log("memory: services/loadgen/conn-memory.sh is not here; memory per connection n/a")
        return {}
    argv = [script, "--connections", str(connections), "--hold", "2", "--bytes-lines",
            "--fleetmq-bin", fleetmq, "--loadgen-bin", loadgen]
    log("== memory:", " ".join(argv))
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"memory: conn-memory.sh failed ({r.returncode}); n/a\n{r.stderr[-2000:]}")
        return {}
    found = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("fleetmq", "mosquitto"):
            try:
                found[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return found


def idle_tls_memory(loadgen, broker, ca, certs, count):
    """Bytes of RSS per idle TLS connection of a freshly started `broker`:
    `count` connections, connection n presenting certificate n of `certs`
    (its client id the certificate's name), held after their CONNACK."""
    # fleetmq-loadgen idle wants DIR/<n>.crt, <n>.key and <n>.id.
    numbered = certs.rstrip("/") + f"-numbered-{broker.name}"
    if not os.path.isdir(numbered):
        os.makedirs(numbered)
        stems = sorted(n[:-4] for n in os.listdir(certs) if n.endswith(".crt"))
        if len(stems) < count:
            sys.exit(f"tls-memory: {len(stems)} certificates in {certs}, {count} wanted")
        for i, stem in enumerate(stems[:count]):
            for ext in ("crt", "key"):
                os.symlink(os.path.join(certs, f"{stem}.{ext}"), os.path.join(numbered, f"{i}.{ext}"))
            with open(os.path.join(numbered, f"{i}.id"), "w") as f:
                f.write(stem + "\n")
    time.sleep(1)
    before = rss_bytes(broker.proc.pid)
    out = os.path.join(os.path.dirname(numbered), f"idle-tls-{broker.name}.out")
    with open(out, "w") as f:
        gen = subprocess.Popen([loadgen, "idle", "--port", str(broker.tls_port), "--tls-ca", ca,
                                "--tls-certs", numbered, "--connections", str(count), "--hold", "0",
                                "--connect-timeout", "600"],
                               stdout=f, stderr=subprocess.STDOUT)
    try:
        until = time.monotonic() + 660
        while time.monotonic() < until:
            with open(out) as f:
                text = f.read()
            if any(line.startswith("connected ") for line in text.splitlines()):
                break
            if gen.poll() is not None:
                sys.exit(f"fleetmq-loadgen idle (TLS) against {broker.name} failed:\n{text[-2000:]}")
            time.sleep(0.2)
        else:
            sys.exit(f"fleetmq-loadgen idle (TLS) against {broker.name}: not all connected in time")
        time.sleep(2)
        after = rss_bytes(broker.proc.pid)
    finally:
        gen.send_signal(signal.SIGTERM)
        try:
            gen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.wait()
    log(f"   {broker.name}: RSS {before // 1024} -> {after // 1024} KiB, {text.splitlines()[0]}")
    return (after - before) / count


# --- scenarios -------------------------------------------------------------


def loadgen_json(loadgen, argv, timeout):
    r = subprocess.run([loadgen, *argv, "--json"], capture_output=True, text=True,
                       timeout=timeout + 120)
    # Exit 2: connection errors or failed connects, reported in the JSON.
    if r.returncode not in (0, 2) or not r.stdout.strip():
        sys.exit(f"fleetmq-loadgen {' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(broker, loadgen, argv, timeout):
    """One loadgen run against `broker`: its report, the broker's CPU seconds
    over it and the load generator's own (the two share the machine's
    cores, so together they bound the rate either broker can show)."""
    before = cpu_secs(broker.proc.pid)
    gen_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = loadgen_json(loadgen, argv, timeout)
    gen_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # QoS 0 stragglers are counted once the broker is quiet; its CPU is too.
    cpu = cpu_secs(broker.proc.pid) - before
    gen = (gen_after.ru_utime + gen_after.ru_stime) - (gen_before.ru_utime + gen_before.ru_stime)
    return report, cpu, gen


def scenario_rows(scenario, size):
    """(row label, loadgen arguments without --port, kind) per table row."""
    s = SIZES[size]
    t = ["--timeout", str(s["timeout"])]
    rows = []
    if scenario == "fan-in":
        p, m, b = s["fan_in"]
        for q in (0, 1):
            rows.append((f"fan-in {p}x{m}x{b}B qos{q}",
                         ["--publishers", str(p), "--messages", str(m), "--payload", str(b),
                          "--subscribers", "1", "--qos", str(q), *t], "msg"))
    elif scenario == "fan-out":
        for subs, m in s["fan_out"]:
            for q in (0, 1):
                rows.append((f"fan-out 1->{subs} x{m} qos{q}",
                             ["--publishers", "1", "--messages", str(m), "--payload", "64",
                              "--subscribers", str(subs), "--qos", str(q), *t], "msg"))
    elif scenario == "connect":
        rows.append((f"connect {s['connects']} c{s['concurrency']}",
                     ["--mode", "storm", "--connections", str(s["connects"]),
                      "--concurrency", str(s["concurrency"]), *t], "conn"))
    elif scenario == "tls-connect":
        rows.append((f"tls-connect {s['connects']} c{s['concurrency']}",
                     ["--mode", "storm", "--connections", str(s["connects"]),
                      "--concurrency", str(s["concurrency"]), *t], "tls"))
    return rows


def record(result, kind, cpu, gen):
    """rate, losses, CPU µs per unit, p99 ms from one loadgen report."""
    lat = result.get("latency") or {}
    p99 = lat.get("p99_us", 0) / 1000 if lat else None
    if kind == "msg":
        lost = result["expected"] - result["delivered"]
        done = result["delivered"]
        rate = result["delivery_rate"]
    else:
        # Failed and never tried (a time-out) alike.
        lost = result["connections"] - result["connected"]
        done = result["connected"]
        rate = result["connect_rate"]
    return {"rate": rate, "lost": lost, "cpu_us": cpu * 1e6 / done if done else None,
            "gen_us": gen * 1e6 / done if done else None, "p99": p99}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def add_binary_args(ap):
    """The options that say which fleetmq and loadgen binaries run."""
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--fleetmq-bin")
    ap.add_argument("--loadgen-bin")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")


def binaries(args):
    """(fleetmq, fleetmq-loadgen) paths, built first unless --no-build."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    fleetmq = args.fleetmq_bin or os.path.join(target, args.profile, "fleetmq")
    loadgen = args.loadgen_bin or os.path.join(target, args.profile, "fleetmq-loadgen")
    if not args.no_build:
        flags = ["--release"] if args.profile == "release" else []
        log(f"building fleetmq and fleetmq-loadgen ({args.profile})")
        subprocess.run(["cargo", "build", "--quiet", *flags, "-p", "fleetmq", "-p", "loadgen"],
                       cwd=ROOT, check=True)
    return fleetmq, loadgen


def main():
    ap = argparse.ArgumentParser(description="fleetmq vs Mosquitto on loopback")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    add_binary_args(ap)
    ap.add_argument("--json-out", help="also write every measurement to this file")
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios or args.runs < 1:
        ap.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}; --runs at least 1")
    if not os.path.exists(MOSQUITTO):
        sys.exit(f"{MOSQUITTO} is missing: install the Debian mosquitto package")

    fleetmq, loadgen = binaries(args)
    s = SIZES[args.size]
    p, m, _ = s["fan_in"]
    queue = max(p * m, max(msgs for _, msgs in s["fan_out"]), 10000)
    measured = [sc for sc in scenarios if sc not in ("memory", "tls-memory")]

    work = tempfile.mkdtemp(prefix="fleetmq-bench.")
    brokers = []
    results = {}  # (row, broker) -> [record per run]
    labels = []
    try:
        tls = "tls-connect" in scenarios or "tls-memory" in scenarios
        # One certificate per connection: for the storm and the held ones.
        cert_count = max(s["connects"], s["memory"] if "tls-memory" in scenarios else 0)
        mosq_pki = None
        fleet_certs = None
        if tls:
            log(f"openssl: CA, server and {cert_count} client certificates for Mosquitto")
            mosq_pki = mosquitto_certs(work, cert_count)
        for run in range(1, args.runs + 1):
            # Odd runs fleetmq first, even runs Mosquitto first: neither
            # always gets the cooler machine.
            order = ["fleetmq", "mosquitto"] if run % 2 else ["mosquitto", "fleetmq"]
            log(f"run {run}/{args.runs}: order {' then '.join(order)}")
            started = {}
            started["mosquitto"] = start_mosquitto(work, run, queue, mosq_pki)
            brokers.append(started["mosquitto"])
            started["fleetmq"] = start_fleetmq(fleetmq, work, run, queue)
            brokers.append(started["fleetmq"])
            if tls and fleet_certs is None:
                log(f"fleetmq REST: tenant, {cert_count} devices and certificates")
                fleet_certs = fleetmq_certs(fleetmq, work, started["fleetmq"], cert_count)
            for scenario in measured:
                for label, argv, kind in scenario_rows(scenario, args.size):
                    if label not in labels:
                        labels.append(label)
                    for name in order:
                        b = started[name]
                        extra = ["--port", str(b.port)]
                        if kind == "tls":
                            ca = b.ca if name == "fleetmq" else mosq_pki[0]
                            certs = fleet_certs if name == "fleetmq" else mosq_pki[1]
                            extra = ["--port", str(b.tls_port), "--tls-ca", ca, "--certs", certs]
                        log(f"== run {run} {label} {name}")
                        report, cpu, gen = measure(b, loadgen, [*extra, *argv], s["timeout"])
                        rec = record(report, kind, cpu, gen)
                        rec["report"] = report
                        results.setdefault((label, name), []).append(rec)
                        log(f"   rate {rec['rate']:.0f}/s lost {rec['lost']} "
                            f"cpu {fmt(rec['cpu_us'], '.1f')} us (loadgen {fmt(rec['gen_us'], '.1f')} us) p99 {fmt(rec['p99'], '.2f')} ms")
            for name in order:
                started[name].stop()
        memory = {}
        if "memory" in scenarios:
            memory = memory_hook(loadgen, fleetmq, s["memory"])
        tls_memory = {}
        if "tls-memory" in scenarios:
            # Fresh processes, one at a time, Mosquitto first (as conn-memory.sh).
            log(f"== tls-memory: {s['memory']} idle TLS connections, a client certificate each")
            b = start_mosquitto(work, "tls-memory", queue, mosq_pki)
            brokers.append(b)
            tls_memory["mosquitto"] = idle_tls_memory(loadgen, b, mosq_pki[0], mosq_pki[1], s["memory"])
            b.stop()
            b = start_fleetmq(fleetmq, work, "tls-memory", queue)
            brokers.append(b)
            tls_memory["fleetmq"] = idle_tls_memory(loadgen, b, b.ca, fleet_certs, s["memory"])
            b.stop()
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"size": args.size, "runs": args.runs, "memory_bytes_per_connection": memory,
                       "tls_memory_bytes_per_connection": tls_memory,
                       "results": [{"row": k[0], "broker": k[1], "runs": v} for k, v in results.items()]},
                      f, indent=1)

    print(f"\nfleetmq vs Mosquitto, size {args.size}, median of {args.runs} run(s), "
          f"broker order alternating; CPU = broker utime+stime per delivery or per connect, "
          f"gen = the load generator's, on the same cores")
    head = (f"{'scenario':<30} {'broker':<10} {'rate/s':>10} {'lost':>7} {'cpu us/op':>10} "
            f"{'gen us/op':>10} {'p99 ms':>8} {'mem/conn':>10} {'ratio f/m':>9}")
    print(head)
    print("-" * len(head))
    for label in labels:
        med = {}
        for name in ("fleetmq", "mosquitto"):
            recs = results.get((label, name), [])
            med[name] = {
                "rate": median([r["rate"] for r in recs]),
                "lost": sum(r["lost"] for r in recs),
                "cpu_us": median([r["cpu_us"] for r in recs]),
                "gen_us": median([r.get("gen_us") for r in recs]),
                "p99": median([r["p99"] for r in recs]),
            }
        f_rate, m_rate = med["fleetmq"]["rate"], med["mosquitto"]["rate"]
        ratio = f_rate / m_rate if f_rate is not None and m_rate else None
        for name in ("fleetmq", "mosquitto"):
            r = med[name]
            print(f"{label:<30} {name:<10} {fmt(r['rate'], '.0f'):>10} {r['lost']:>7} "
                  f"{fmt(r['cpu_us'], '.1f'):>10} {fmt(r['gen_us'], '.1f'):>10} "
                  f"{fmt(r['p99'], '.2f'):>8} {'-':>10} "
                  f"{fmt(ratio, '.2f') if name == 'fleetmq' else '':>9}")
    for scenario, label, found in (
            ("memory", f"memory {s['memory']} idle conns", memory),
            ("tls-memory", f"tls-memory {s['memory']} idle conns", tls_memory)):
        if scenario not in scenarios:
            continue
        f_mem, m_mem = found.get("fleetmq"), found.get("mosquitto")
        ratio = f_mem / m_mem if f_mem is not None and m_mem else None
        for name, v in (("fleetmq", f_mem), ("mosquitto", m_mem)):
            mem = "n/a" if v is None else f"{v / 1024:.1f}KiB"
            print(f"{label:<30} {name:<10} {'-':>10} {'-':>7} {'-':>10} {'-':>10} {'-':>8} {mem:>10} "
                  f"{fmt(ratio, '.2f') if name == 'fleetmq' else '':>9}")
    print("lost: summed over runs (deliveries short of expected, or failed connects); "
          "ratio: fleetmq rate / Mosquitto rate (memory: fleetmq / Mosquitto bytes)")


if __name__ == "__main__":
    main()
