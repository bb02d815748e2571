#!/usr/bin/env python3
"""Offline checks of deploy/: each file against its format's schema or linter,
then the rules that tie the files together (the ports, variables and
timeouts one file promises and another relies on).

    python3 tests/deploy/check.py compose|k8s|dockerfile|keepalive

Prints "ok <what>" per passed check and exits 0; on a failure prints what is
wrong and exits 1. Run by tests/e2e/deploy.rs; the tools are pinned in
tests/deploy/requirements.txt (.ci/deps installs them).
"""

import glob
import os
import re
import subprocess
import sys
import sysconfig
import tomllib

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
# The container ports the image listens on (Dockerfile ENV), by listener.
PORTS = {"MQTT": 1883, "MQTTS": 8883, "WS": 8083, "HTTP": 8080}


class Failed(Exception):
    pass


def ok(what):
    print(f"ok {what}", flush=True)


def require(cond, what):
    if not cond:
        raise Failed(what)


def run_tool(args, what):
    res = subprocess.run(args, capture_output=True, text=True)
    require(res.returncode == 0, f"{what} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    ok(what)
    return res.stdout


def read(rel):
    with open(os.path.join(DEPLOY, rel), encoding="utf-8") as f:
        return f.read()


def haproxy_variables():
    """Every ${VAR} deploy/haproxy.cfg reads (outside comments)."""
    code = "\n".join(line.split("#", 1)[0] for line in read("haproxy.cfg").splitlines())
    return sorted(set(re.findall(r"\$\{([A-Z0-9_]+)\}", code)))


def mqtt_idle_timeouts():
    """timeout client/server of haproxy.cfg's `defaults mqtt`, in seconds."""
    section, found = None, {}
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 0.001}
    for line in read("haproxy.cfg").splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not line[0].isspace():
            section = " ".join(words[:2])
            continue
        if section == "defaults mqtt" and words[0] == "timeout" and words[1] in ("client", "server"):
            m = re.fullmatch(r"(\d+)([a-z]*)", words[2])
            require(m, f"timeout {words[1]} {words[2]}: a number with a unit")
            found[words[1]] = int(m.group(1)) * units[m.group(2)]
    require(set(found) == {"client", "server"}, f"defaults mqtt sets timeout client and server: {found}")
    return found


def hard_stop_after():
    """haproxy.cfg's hard-stop-after, in seconds."""
    m = re.search(r"^\s*hard-stop-after (\d+)s\b", read("haproxy.cfg"), re.M)
    require(m, "haproxy.cfg sets hard-stop-after in seconds")
    return int(m.group(1))


def check_haproxy_env(env, where):
    """`env` (name -> value) sets every variable haproxy.cfg reads."""
    missing = [v for v in haproxy_variables() if v not in env]
    require(not missing, f"{where}: HAProxy variables not set: {missing}")
    for n in (1, 2, 3):
        for listener, port in PORTS.items():
            value = str(env[f"NODE{n}_{listener}"])
            require(value.endswith(f":{port}"), f"{where}: NODE{n}_{listener}={value} is not the node's port {port}")
    ok(f"{where} sets every variable of haproxy.cfg ({len(haproxy_variables())})")


# --- docker-compose.yml -------------------------------------------------------

def compose():
    path = os.path.join(DEPLOY, "docker-compose.yml")
    run_tool([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
             "docker-compose.yml matches the compose specification's schema")
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services = doc["services"]
    nodes = {name: s for name, s in services.items()
             if "FLEETMQ_NODE_NAME" in (s.get("environment") or {})}
    require(len(nodes) == 3, f"three fleetmq nodes, found {sorted(nodes)}")
    names = {s["environment"]["FLEETMQ_NODE_NAME"] for s in nodes.values()}
    require(len(names) == 3, f"distinct node names: {names}")
    require("-js" in services["nats"]["command"], "nats runs with JetStream (-js)")
    kek_files = set()
    for name, s in nodes.items():
        env = s["environment"]
        require(s["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"},
                f"{name} builds deploy/Dockerfile from the repository root")
        require(env["FLEETMQ_DATABASE_URL"].startswith("postgres://")
                and "@postgres:5432/" in env["FLEETMQ_DATABASE_URL"], f"{name}: the postgres service")
        require(env["FLEETMQ_NATS_URL"] == "nats://nats:4222", f"{name}: the nats service")
        kek = env["FLEETMQ_KEK_FILE"]
        kek_files.add(kek)
        require(f"kek:{os.path.dirname(kek)}:ro" in s["volumes"], f"{name} mounts the shared kek volume read-only")
        require(s["depends_on"]["postgres"]["condition"] == "service_healthy"
                and s["depends_on"]["nats"]["condition"] == "service_healthy"
                and s["depends_on"]["kek"]["condition"] == "service_completed_successfully",
                f"{name} starts after postgres and nats are healthy and the KEK exists")
        require(int(s["stop_grace_period"].rstrip("s")) > int(env["FLEETMQ_SHUTDOWN_TIMEOUT"]),
                f"{name}: stop_grace_period exceeds the shutdown drain")
        require(s["ulimits"]["nofile"]["soft"] >= 65536, f"{name}: file limit")
    require(len(kek_files) == 1, f"one KEK file for all nodes: {kek_files}")
    require(any(v.startswith("kek:") for v in services["kek"]["volumes"]), "the kek service writes the kek volume")
    ok("three nodes share postgres, nats (JetStream) and one KEK; distinct names")

    lb = services["haproxy"]
    env = lb["environment"]
    check_haproxy_env(env, "compose haproxy")
    for n in (1, 2, 3):
        for listener in PORTS:
            host = str(env[f"NODE{n}_{listener}"]).rsplit(":", 1)[0]
            require(host in nodes, f"NODE{n}_{listener} names a node service: {host}")
    require("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"], "haproxy mounts deploy/haproxy.cfg")
    require(int(lb["stop_grace_period"].rstrip("s")) > hard_stop_after(),
            "haproxy's stop_grace_period exceeds hard-stop-after")
    published = {int(p.rsplit(":", 1)[1]) for p in lb["ports"]}
    binds = {int(str(env[f"LB_{l}_BIND"]).rsplit(":", 1)[1]) for l in PORTS}
    require(published == binds, f"haproxy publishes the ports it binds: {published} vs {binds}")
    ok("haproxy points at the three nodes and publishes its frontends")


# --- k8s/*.yaml and kustomization.yaml ----------------------------------------

def k8s_documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            docs += [(os.path.relpath(path, DEPLOY), d) for d in yaml.safe_load_all(f) if d]
    return docs


def one(docs, kind, name):
    found = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    require(len(found) == 1, f"one {kind} {name}")
    return found[0]


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def k8s():
    import kubernetes_validate

    docs = k8s_documents()
    # 1.30: the oldest Kubernetes the manifests use fields of (preStop
    # sleep); the newest: whatever this kubernetes-validate knows.
    versions = ["1.30.0", kubernetes_validate.latest_version()]
    for version in versions:
        for rel, d in docs:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise Failed(f"{rel}: {d['kind']} {d['metadata']['name']} ({version}): {e.message} at {list(e.path)}")
    ok(f"{len(docs)} Kubernetes objects match the schemas of {' and '.join(versions)} (strict: no unknown fields)")

    sts = one(docs, "StatefulSet", "fleetmq")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    require(spec["replicas"] == 3, "three replicas")
    headless = one(docs, "Service", spec["serviceName"])
    require(headless["spec"].get("clusterIP") == "None", "the StatefulSet's service is headless")
    (c,) = [c for c in pod["containers"] if c["name"] == "fleetmq"]
    require(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe on /readyz")
    require(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
    requests = c["resources"]["requests"]
    require("cpu" in requests and "memory" in requests and "memory" in c["resources"]["limits"],
            "cpu and memory requests, a memory limit")
    sc = pod["securityContext"]
    require(sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, "runs as a non-root user")
    require("fsGroup" not in sc, "no fsGroup (it makes the KEK Secret group-readable, which fleetmq refuses)")
    require(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    require(any(t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"].items() <= labels.items()
                for t in anti), "required anti-affinity: one node per machine")
    env = env_of(c)
    require(env["FLEETMQ_NODE_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "node name = pod name")
    require(env["FLEETMQ_NATS_URL"].startswith("nats://"), "a NATS URL")
    db_ref = env["FLEETMQ_DATABASE_URL"]["secretKeyRef"]
    secret = one(docs, "Secret", db_ref["name"])
    require(db_ref["key"] in secret["stringData"], "the database URL is in the Secret")
    kek_volume = [v for v in pod["volumes"] if "secret" in v]
    require(len(kek_volume) == 1 and kek_volume[0]["secret"]["secretName"] == secret["metadata"]["name"]
            and "kek.hex" in secret["stringData"], "the KEK comes from the Secret")
    (init,) = pod["initContainers"]
    require(init["command"][-1] == env["FLEETMQ_KEK_FILE"] and "0600" in init["command"],
            "the init container writes FLEETMQ_KEK_FILE with mode 0600")
    grace = pod["terminationGracePeriodSeconds"]
    drain = int(env["FLEETMQ_SHUTDOWN_TIMEOUT"]) + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    require(grace > drain, f"terminationGracePeriodSeconds {grace} exceeds preStop + drain {drain}")
    pdbs = [d for _, d in docs if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    require(len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1, "a PDB: at most one node down")
    ok("StatefulSet: probes, requests, non-root, anti-affinity, KEK and database from the Secret, PDB")

    # Every Service reaches named ports its pods have.
    pods = [(d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
            for _, d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    for _, d in docs:
        if d["kind"] != "Service":
            continue
        selected = [p for lbl, p in pods if d["spec"]["selector"].items() <= lbl.items()]
        require(selected, f"Service {d['metadata']['name']} selects pods")
        names = {p["name"] for s in selected for c in s["containers"] for p in c.get("ports", [])}
        for p in d["spec"]["ports"]:
            require(p["targetPort"] in names, f"Service {d['metadata']['name']}: port {p['targetPort']}")
    ok("every Service targets ports its pods declare")

    lb = one(docs, "Deployment", "haproxy")
    (hc,) = lb["spec"]["template"]["spec"]["containers"]
    henv = env_of(hc)
    check_haproxy_env(henv, "k8s haproxy")
    require(lb["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > hard_stop_after(),
            "haproxy's terminationGracePeriodSeconds exceeds hard-stop-after")
    ns = sts["metadata"]["namespace"]
    for n in (1, 2, 3):
        for listener in PORTS:
            host = henv[f"NODE{n}_{listener}"].rsplit(":", 1)[0]
            want = f"{sts['metadata']['name']}-{n - 1}.{spec['serviceName']}.{ns}.svc.cluster.local"
            require(host == want, f"NODE{n}_{listener}: {host}, expected {want}")
    ok("haproxy reaches the StatefulSet's pods by their DNS names")

    with open(os.path.join(DEPLOY, "kustomization.yaml"), encoding="utf-8") as f:
        kust = yaml.safe_load(f)
    listed = set(kust["resources"])
    present = {rel for rel, _ in docs} - {"k8s/secret.yaml"}
    require(listed == present, f"kustomization lists every manifest but the Secret: {listed} vs {present}")
    (gen,) = kust["configMapGenerator"]
    require(gen["files"] == ["haproxy.cfg"], "the ConfigMap is made from deploy/haproxy.cfg")
    volumes = lb["spec"]["template"]["spec"]["volumes"]
    require(any(v.get("configMap", {}).get("name") == gen["name"] for v in volumes),
            "haproxy mounts the generated ConfigMap")
    ok("kustomization.yaml: every manifest but the Secret, ConfigMap from haproxy.cfg")


# --- Dockerfile ------------------------------------------------------------------

def instructions(text):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def dockerfile():
    path = os.path.join(DEPLOY, "Dockerfile")
    hadolint = os.path.join(sysconfig.get_path("scripts"), "hadolint")
    run_tool([hadolint, "--failure-threshold", "info", path], "hadolint finds nothing in deploy/Dockerfile")
    steps = instructions(read("Dockerfile"))
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    require(len(froms) >= 2, "multi-stage: a build stage and a runtime stage")
    build, final = steps[froms[0]:froms[1]], steps[froms[-1]:]
    require(any(w == "RUN" and "cargo build --release --locked -p fleetmq" in a for w, a in build),
            "the build stage runs cargo build --release --locked -p fleetmq")
    require(not any(w == "FROM" and "rust" in a for w, a in final), "the runtime stage is not the Rust image")
    users = [a for w, a in final if w == "USER"]
    require(users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0,
            f"the runtime runs as a numeric non-root user: {users}")
    checks = [a for w, a in final if w == "HEALTHCHECK"]
    require(len(checks) == 1 and "/healthz" in checks[0], "a HEALTHCHECK on /healthz")
    exposed = {int(p) for w, a in final if w == "EXPOSE" for p in a.split()}
    require(exposed == set(PORTS.values()), f"EXPOSE {sorted(exposed)}")
    env = " ".join(a for w, a in final if w == "ENV")
    for listener, port in PORTS.items():
        var = "FLEETMQ_WS_LISTEN" if listener == "WS" else f"FLEETMQ_{listener}_LISTEN"
        require(f"{var}=0.0.0.0:{port}" in env, f"{var} listens on the exposed {port}")
    require(any(w == "VOLUME" for w, _ in final), "the data dir is a volume")
    ok("Dockerfile: multi-stage, non-root, health check, ports, data volume")

    with open(os.path.join(DEPLOY, "k8s", "fleetmq.yaml"), encoding="utf-8") as f:
        sts = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "StatefulSet"][0]
    uid = sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    require(str(uid) == users[-1].split(":")[0], f"k8s runAsUser {uid} is the image's user {users[-1]}")
    ignored = set(read("Dockerfile.dockerignore").split())
    require({".git", "target"} <= ignored, "the build context leaves out .git and target")
    ok("the image's user is the manifests'; the build context skips .git and target")


# --- keep-alive against the load balancer's idle timeout -------------------------

def keepalive():
    timeouts = mqtt_idle_timeouts()
    idle = min(timeouts.values())
    with open(os.path.join(DEPLOY, "docker-compose.yml"), encoding="utf-8") as f:
        compose_doc = yaml.safe_load(f)
    values = {
        "docker-compose.yml": {int(s["environment"]["FLEETMQ_MQTT_MAX_KEEP_ALIVE"])
                               for s in compose_doc["services"].values()
                               if "FLEETMQ_NODE_NAME" in (s.get("environment") or {})},
        "fleetmq.toml": {tomllib.loads(read("fleetmq.toml"))["mqtt_max_keep_alive"]},
        "k8s/fleetmq.yaml": {int(env_of(c)["FLEETMQ_MQTT_MAX_KEEP_ALIVE"])
                             for _, d in k8s_documents() if d["kind"] == "StatefulSet"
                             for c in d["spec"]["template"]["spec"]["containers"]},
    }
    for where, keep_alives in values.items():
        require(len(keep_alives) == 1, f"{where}: one keep-alive cap for all nodes: {keep_alives}")
        (k,) = keep_alives
        # The broker closes a silent client after 1.5 x keep-alive
        # (MQTT-3.1.2-24); the proxy must not cut it first.
        require(idle > 1.5 * k, f"{where}: HAProxy's MQTT idle timeout {idle}s <= 1.5 x keep-alive {k}s")
        ok(f"{where}: keep-alive cap {k}s x 1.5 < HAProxy's MQTT idle timeout {idle:.0f}s")


CHECKS = {"compose": compose, "k8s": k8s, "dockerfile": dockerfile, "keepalive": keepalive}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)}")
    try:
        CHECKS[sys.argv[1]]()
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
