#!/usr/bin/env python3
"""Render zoo's Helm chart and plain manifests and check them.

Usage: check_kubernetes.py ZOO_BIN [--update]

With the environment of tests/python/requirements-kubernetes.txt (helm and
kubernetes-validate on PATH next to this Python):
  - `helm lint --strict` on the chart;
  - renders it with its defaults, with every option on, and with
    deploy/kubernetes/values.yaml; every object must pass kubernetes-validate
    --strict against the Kubernetes API schemas (the oldest and newest release
    it knows that the chart supports);
  - deploy/kubernetes/zoo.yaml must be exactly that last rendering (--update
    rewrites it);
  - what zoo itself has to agree with: every ZOO_* variable is one `zoo serve
    --help` names, the probes are /readyz and /healthz on the port the server
    listens on, selectors match the pods, the grace period outlasts the drain;
  - the real binary starts with the ConfigMap's settings (store and database
    moved to a temporary directory) and answers both probes, then drains on
    SIGTERM (/readyz 503 `draining`) and exits 0.
Prints what it checked; exits 1 on the first failure.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "deploy", "helm", "zoo")
PLAIN = os.path.join(ROOT, "deploy", "kubernetes", "zoo.yaml")
PLAIN_VALUES = os.path.join(ROOT, "deploy", "kubernetes", "values.yaml")
BIN = os.path.dirname(sys.executable)
HELM = os.path.join(BIN, "helm")
# The oldest Kubernetes release the chart supports (autoscaling/v2, policy/v1 PDB
# and seccompProfile fields are all GA there) and the newest the validator knows.
KUBERNETES = ["1.25.0", kubernetes_validate.latest_version()]
PLAIN_HEADER = (
    "# Generated from the Helm chart deploy/helm/zoo with deploy/kubernetes/values.yaml:\n"
    "#   helm template zoo deploy/helm/zoo --namespace zoo -f deploy/kubernetes/values.yaml\n"
    "# (tests/python/check_kubernetes.py --update). Do not edit by hand.\n"
)


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def helm(*args, ok=True):
    out = subprocess.run([HELM, *args], capture_output=True, text=True)
    if ok and out.returncode != 0:
        fail(f"helm {' '.join(args)}: {out.stderr.strip()}")
    return out


def render(*args):
    text = helm("template", "zoo", CHART, "--namespace", "zoo", *args).stdout
    return text, [d for d in yaml.safe_load_all(text) if d]


def validate(docs, label):
    for version in KUBERNETES:
        for d in docs:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{label}: {d['kind']}/{d['metadata']['name']} against Kubernetes {version}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(f"{label}: {d['kind']} ({d['apiVersion']}) is not in Kubernetes {version}: {e}")
    print(f"valid   {label}: {', '.join(sorted(d['kind'] for d in docs))} against Kubernetes {' and '.join(KUBERNETES)}")


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def serve_variables(zoo_bin):
    text = subprocess.run([zoo_bin, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"\[env: (ZOO_[A-Z0-9_]+)", text))
    if len(names) < 20:
        fail(f"`zoo serve --help` names only {sorted(names)}")
    return names


def check_agreement(docs, label, known, existing_secrets=()):
    kinds = by_kind(docs)
    (dep,) = kinds["Deployment"]
    (cm,) = kinds["ConfigMap"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    if any(labels.get(k) != v for k, v in selector.items()):
        fail(f"{label}: the Deployment's selector {selector} does not match its pods {labels}")
    for kind in ("Service", "PodDisruptionBudget"):
        for d in kinds.get(kind, []):
            sel = d["spec"]["selector"]
            sel = sel.get("matchLabels", sel)
            if sel != selector:
                fail(f"{label}: the {kind}'s selector {sel} is not the pods' {selector}")
    names = {e["name"] for e in c.get("env", [])} | set(cm["data"])
    unknown = {n for n in names if n.startswith("ZOO_")} - known
    if unknown:
        fail(f"{label}: {sorted(unknown)} are not settings of `zoo serve` (see zoo serve --help)")
    args = c["args"]
    listen = args[args.index("--listen") + 1]
    port = int(listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("http") != port or not listen.startswith("0.0.0.0:"):
        fail(f"{label}: the container listens on {listen} but declares ports {ports}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        got = c[probe]["httpGet"]
        if got["path"] != path or ports.get(got["port"], got["port"]) != port:
            fail(f"{label}: {probe} is {got}, not {path} on port {port}")
    for svc in kinds["Service"]:
        if svc["spec"]["ports"][0]["targetPort"] not in ("http", port):
            fail(f"{label}: the Service targets {svc['spec']['ports'][0]['targetPort']}")
    drain = int(cm["data"]["ZOO_SHUTDOWN_DELAY_SECS"]) + int(cm["data"]["ZOO_SHUTDOWN_TIMEOUT_SECS"])
    if pod["spec"]["terminationGracePeriodSeconds"] <= drain:
        fail(f"{label}: the grace period {pod['spec']['terminationGracePeriodSeconds']} s ends before the drain ({drain} s)")
    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] not in existing_secrets:
            s = secrets.get(ref["name"])
            if s is None or ref["key"] not in s.get("data", {}):
                fail(f"{label}: {e['name']} reads {ref} but the chart renders no such Secret key")
    for key in ("ZOO_ADMIN_KEY", "ZOO_SESSION_SECRET", "ZOO_DATABASE_URL"):
        if key not in names:
            fail(f"{label}: {key} is not set: replicas need the same one")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    data_dir = args[args.index("--data-dir") + 1]
    if data_dir not in mounts:
        fail(f"{label}: the data directory {data_dir} is not a volume (mounts: {mounts})")
    print(f"agrees  {label}: settings, probes, ports, selectors, secrets, grace period {pod['spec']['terminationGracePeriodSeconds']} s > drain {drain} s")
    return dep, cm


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_with_configmap(zoo_bin, dep, cm):
    """The real binary with the ConfigMap's settings; store and database local."""
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "AWS_"))}
    env.update({k: str(v) for k, v in cm["data"].items() if not k.startswith("AWS_")})
    with tempfile.TemporaryDirectory() as tmp:
        env["ZOO_STORE"] = f"file://{tmp}/objects"
        env["ZOO_DATABASE_URL"] = f"sqlite://{tmp}/zoo.db"
        env["ZOO_ADMIN_KEY"] = "check-kubernetes-admin-key-0123456789abcdef"
        env["ZOO_SESSION_SECRET"] = "check-kubernetes-session-secret-0123456789abcdef0123456789"
        env["ZOO_SHUTDOWN_DELAY_SECS"] = "2"
        args = list(c["args"])
        args[args.index("--listen") + 1] = "127.0.0.1:0"
        args[args.index("--data-dir") + 1] = f"{tmp}/data"
        proc = subprocess.Popen([zoo_bin, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = None
            deadline = time.time() + 60
            while url is None and time.time() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("zoo: listening on "):
                    url = line.split()[-1]
            if url is None:
                proc.kill()
                fail(f"zoo serve with the ConfigMap's settings did not start: {proc.stderr.read()[-2000:]}")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                path = c[probe]["httpGet"]["path"]
                status, body = get(url + path)
                if status != 200:
                    fail(f"{probe} {path} answered {status}: {body}")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            status, body = get(url + c["readinessProbe"]["httpGet"]["path"])
            if status != 503 or '"draining"' not in body:
                fail(f"after SIGTERM the readiness probe answered {status} {body}, not 503 draining")
            code = proc.wait(timeout=60)
            if code != 0:
                fail(f"zoo serve exited {code} after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
    print(f"starts  zoo serve with the ConfigMap's {len(cm['data'])} settings: probes 200; after SIGTERM /readyz 503 draining, exit 0")


def main():
    zoo_bin = sys.argv[1]
    update = "--update" in sys.argv[2:]
    known = serve_variables(zoo_bin)
    db = ["--set", "database.url=postgres://zoo:secret@postgres:5432/zoo"]

    lint = helm("lint", "--strict", CHART, *db)
    print(f"lint    {lint.stdout.strip().splitlines()[-1]}")

    missing = helm("template", "zoo", CHART, ok=False)
    if missing.returncode == 0 or "database.url is required" not in missing.stderr:
        fail(f"a chart without a database URL rendered: {missing.stderr or missing.stdout[:200]}")
    print("refuses a release without database.url or secrets.existingSecret")

    _, docs = render(*db)
    validate(docs, "defaults")
    dep, cm = check_agreement(docs, "defaults", known)
    kinds = by_kind(docs)
    if dep["spec"]["replicas"] != 3 or "HorizontalPodAutoscaler" in kinds or "Ingress" in kinds:
        fail("defaults: 3 replicas, no autoscaler, no ingress")
    if "PodDisruptionBudget" not in kinds or "Secret" not in kinds:
        fail("defaults: a PodDisruptionBudget and the chart's Secret")
    admin = kinds["Secret"][0]["data"]["admin-key"]
    if len(admin) < 48:
        fail("defaults: a generated admin key")

    everything = [
        "--set", "secrets.existingSecret=zoo-secrets",
        "--set", "store.credentialsSecret=zoo-s3",
        "--set", "store.endpoint=https://s3.internal:9000",
        "--set", "ingress.enabled=true",
        "--set", "ingress.className=nginx",
        "--set", "autoscaling.enabled=true",
        "--set", "autoscaling.targetQueueDepth=8",
        "--set", "torchscript.serve=true",
        "--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/zoo",
        "--set", "extraEnv[0].name=ZOO_MAX_BATCH_SIZE",
        "--set-string", "extraEnv[0].value=16",
    ]
    _, docs = render(*everything)
    validate(docs, "every option")
    dep, cm = check_agreement(docs, "every option", known, existing_secrets=("zoo-secrets",))
    kinds = by_kind(docs)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]["metrics"]
    checks = {
        "no replica count under an autoscaler": "replicas" not in dep["spec"],
        "scales on CPU and zoo_queue_depth": [m["type"] for m in hpa] == ["Resource", "Pods"]
        and hpa[1]["pods"]["metric"]["name"] == "zoo_queue_depth",
        "an Ingress to the Service": kinds["Ingress"][0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        == kinds["Service"][0]["metadata"]["name"],
        "no Secret of its own": "Secret" not in kinds,
        "S3 credentials from their Secret": {"secretRef": {"name": "zoo-s3"}} in c["envFrom"],
        "the S3 endpoint": cm["data"].get("AWS_ENDPOINT_URL") == "https://s3.internal:9000",
        "the service account's role": "eks.amazonaws.com/role-arn" in kinds["ServiceAccount"][0]["metadata"]["annotations"],
        "TorchScript's user namespaces allowed": c["securityContext"]["seccompProfile"]["type"] == "Unconfined",
    }
    bad = [k for k, v in checks.items() if not v]
    if bad:
        fail(f"every option: {bad}")
    print(f"options {', '.join(checks)}")

    text, docs = render("-f", PLAIN_VALUES)
    text = PLAIN_HEADER + text
    if update:
        with open(PLAIN, "w") as f:
            f.write(text)
        print(f"wrote   {PLAIN}")
    with open(PLAIN) as f:
        if f.read() != text:
            fail(f"{PLAIN} is not the chart's rendering: run tests/python/check_kubernetes.py ZOO_BIN --update")
    validate([d for d in yaml.safe_load_all(open(PLAIN)) if d], "deploy/kubernetes/zoo.yaml")
    dep, cm = check_agreement(docs, "deploy/kubernetes/zoo.yaml", known, existing_secrets=("zoo",))
    start_with_configmap(zoo_bin, dep, cm)
    print("kubernetes: all checks passed")


if __name__ == "__main__":
    main()
