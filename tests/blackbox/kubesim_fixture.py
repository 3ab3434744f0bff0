"""Starting and driving a kubesim instance from black-box tests (used by test_kubesim.py)."""
import contextlib
import json
import os
import signal
import subprocess
import time

import requests

BUILD_DIR = os.environ.get("RELFLEET_BUILD_DIR", "/work/main/build")
KUBESIM = os.path.join(BUILD_DIR, "bin", "kubesim")
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
RULES = os.path.join(os.path.dirname(__file__), "..", "..", "ops", "kubesim", "rules.example.yaml")


def wait_for(cond, timeout, interval=0.05, what="condition"):
    """Polls cond() until it returns a truthy value or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Kubesim:
    def __init__(self, state_dir, proc, token=None):
        self.dir = str(state_dir)
        self.proc = proc
        self.token = token
        with open(os.path.join(self.dir, "kubesim.addr")) as f:
            self.url = f.read().strip()
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.ca = os.path.join(self.dir, "ca.crt") if self.url.startswith("https") else None

    def session(self, token=True):
        s = requests.Session()
        if self.ca:
            s.verify = self.ca
        if token and self.token:
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def kubectl(self, *args, check=True, timeout=60, kubeconfig=None):
        cmd = [KUBECTL, "--kubeconfig", kubeconfig or self.kubeconfig, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr}")
        return res

    def get_json(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


@contextlib.contextmanager
def kubesim(state_dir, *args, token=None):
    """Runs kubesim in state_dir until the block ends; asserts a clean exit on SIGTERM."""
    os.makedirs(state_dir, exist_ok=True)
    cmd = [KUBESIM, "--state-dir", str(state_dir), *args]
    if token:
        tf = os.path.join(str(state_dir), "token")
        with open(tf, "w") as f:
            f.write(token + "\n")
        cmd += ["--token-file", tf]
    log = open(os.path.join(str(state_dir), "kubesim.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        addr = os.path.join(str(state_dir), "kubesim.addr")
        wait_for(lambda: os.path.exists(addr) or proc.poll() is not None, 10, what="kubesim.addr")
        assert proc.poll() is None, f"kubesim exited early with {proc.returncode}"
        yield Kubesim(state_dir, proc, token)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("kubesim did not stop within 15 s of SIGTERM")
            assert rc == 0, f"kubesim exited with {rc} on SIGTERM"
        log.close()


def deployment_yaml(name, image, replicas=3, extra_spec="", annotations=None, labels=None):
    ann = ""
    if annotations:
        ann = "  annotations:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in annotations.items())
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
{ann}spec:
  replicas: {replicas}
{extra_spec}  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
        ports: [{{containerPort: 8080}}]
"""


SERVICE_YAML = """apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""
