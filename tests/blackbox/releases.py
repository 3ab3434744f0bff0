"""Helpers the release tests share: a configured service, waiting on release states."""
import json
import subprocess
from pathlib import Path

from harness import REPO

TERMINAL = {"succeeded", "failed", "cancelled", "superseded", "rejected"}
ACTIVE = {"rendering", "applying", "progressing", "paused"}
TEMPLATES = REPO / "ops" / "demo" / "templates"


def setup_service(h, service=None, env="prod", versions=("1.0.0",), **settings):
    """Syncs the demo templates and creates a service on template `web`; returns its name."""
    service = service or h.unique_service()
    h.relctl("template", "sync", TEMPLATES)
    pairs = {"template": "web", "namespace": "ns-" + service[-10:], "replicas": "2"}
    pairs.update({k: str(v) for k, v in settings.items()})
    h.relctl("service", "set", service, "--env", env, *[f"{k}={v}" for k, v in pairs.items()])
    for v in versions:
        h.relctl("image", "add", service, v)
    return service


def deploy(h, service, version, env="prod", *extra):
    out = h.relctl_json("deploy", "--service", service, "--env", env, "--version", version,
                        *extra)
    return out["release_id"]


def record(h, release_id):
    proc = h.relctl("show", release_id, "--output", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def wait_status(h, release_id, statuses, timeout=60):
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    seen = {}

    def check():
        r = record(h, release_id)
        seen["last"] = r and r["status"]
        return r if r and r["status"] in statuses else None

    try:
        return h.wait_for(check, timeout, f"release {release_id} to reach {sorted(statuses)}")
    except AssertionError as e:
        raise AssertionError(f"{e} (last status {seen.get('last')})") from None


def kcat_read(h, topic_suffix, until, timeout=30):
    """Reads a topic with kcat (an independent Kafka client) until until(messages) holds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(
            ["kcat", "-C", "-b", h.env["RELFLEET_KAFKA_BROKERS"], "-t", h.topic(topic_suffix),
             "-o", "beginning", "-e", "-J", "-q"],
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        # Other tests put hostile bytes on the same topics: keep what is readable.
        msgs = []
        for line in proc.stdout.decode("utf-8", errors="replace").splitlines():
            try:
                msgs.append(json.loads(line))
            except ValueError:
                continue
        if until(msgs):
            return msgs
        if time.monotonic() > deadline:
            raise AssertionError(f"kcat: condition not met on {topic_suffix} after {timeout}s "
                                 f"({len(msgs)} messages; stderr {proc.stderr[-300:]!r})")
        time.sleep(0.3)
