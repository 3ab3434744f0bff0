"""The web console in a real headless Chromium (Debian's chromium driven by playwright-core):
log in, the release list, a release watched live to its end (its template shown once
rendered), rollback, an admin's configuration change, a releaser's refusal, and approve/deny
of releases awaiting approval by an approver (none offered to the requester). Screenshots go to tests/artifacts/console/."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO, Harness
from releases import deploy, setup_service, wait_status

BROWSER_DIR = REPO / "tests" / "browser"
ARTIFACTS = REPO / "tests" / "artifacts" / "console"


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)


def _apt_install(*packages):
    if os.geteuid() != 0:
        pytest.fail(f"{' '.join(packages)} missing and not root to install it (run ops/bootstrap)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = _run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=900)
    if proc.returncode != 0:
        _run(["apt-get", "update", "-q"], env=env, timeout=600)
        proc = _run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"cannot install {' '.join(packages)}: {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def browser_tools():
    """Chromium, node and playwright-core, installed when missing (CI starts fresh). A
    browser that cannot be installed fails the test: it is never skipped."""
    if not Path("/usr/bin/chromium").exists():
        _apt_install("chromium")
    if not shutil.which("node") or not shutil.which("npm"):
        _apt_install("nodejs", "npm")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        proc = _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"npm ci in tests/browser failed: {proc.stdout[-1000:]} {proc.stderr[-2000:]}")
    version = _run(["/usr/bin/chromium", "--version"], timeout=60)
    assert version.returncode == 0, version.stderr
    return version.stdout.strip()


def test_console_in_chromium(stack, browser_tools):
    h = Harness(stack)
    assert "RELFLEET_API_URL" in h.env, "ops/stack env exports no RELFLEET_API_URL"
    # slow*: each pod takes 1 s to be ready on the tests' kubesim (time scale 20), so a
    # release still runs when its page opens on a loaded machine (the test watches it live;
    # a CI run with 1.x versions saw the second end before its page opened).
    svc = setup_service(h, h.unique_service("console"), versions=("slow-1.0.0", "slow-1.1.0"))
    user = "rel-" + svc[-8:]
    h.relctl("user", "add", user)
    h.relctl("user", "grant", user, "releaser", "--service", svc, "--env", "prod")
    releaser_token = h.relctl("user", "token", user).stdout.strip()
    # Two of admin's releases awaiting one approval, and an approver who is not admin.
    gated = setup_service(h, h.unique_service("console-gated"), approvals=1)
    approver = "appr-" + gated[-8:]
    h.relctl("user", "add", approver)
    h.relctl("user", "grant", approver, "approver", "--service", gated, "--env", "prod")
    approver_token = h.relctl("user", "token", approver).stdout.strip()
    awaiting = [deploy(h, gated, "1.0.0") for _ in range(2)]
    for rid in awaiting:
        wait_status(h, rid, "awaiting_approval")
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    env = dict(os.environ, RELFLEET_API_URL=h.env["RELFLEET_API_URL"],
               CONSOLE_ADMIN_TOKEN=h.env["RELFLEET_TOKEN"], CONSOLE_RELEASER_TOKEN=releaser_token,
               CONSOLE_SERVICE=svc, CONSOLE_ENV="prod", CONSOLE_VERSIONS="slow-1.0.0,slow-1.1.0",
               CONSOLE_ARTIFACTS=str(ARTIFACTS), CONSOLE_APPROVER_TOKEN=approver_token,
               CONSOLE_AWAITING=",".join(awaiting))
    proc = _run(["node", str(BROWSER_DIR / "console.js")], env=env, cwd=BROWSER_DIR, timeout=600)
    assert proc.returncode == 0, (f"{browser_tools}\nstdout:\n{proc.stdout}\nstderr:\n"
                                  f"{proc.stderr}\nscreenshots in {ARTIFACTS}")
    assert proc.stdout.rstrip().splitlines()[-1].startswith("ok: ")
    for name in ("01-release-list", "02-release-succeeded", "03-rollback-succeeded",
                 "04-admin-edits-config", "05-releaser-readonly", "06-approval-approved",
                 "07-approval-denied"):
        shot = ARTIFACTS / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 5000, f"no screenshot {shot}"
    # What the browser did, as the system recorded it.
    history = h.relctl_json("history", "--service", svc, "--env", "prod")
    kinds = sorted((r["kind"], r["version"], r["status"]) for r in history)
    assert kinds == [("deploy", "slow-1.0.0", "succeeded"),
                     ("deploy", "slow-1.1.0", "succeeded"),
                     ("rollback", "slow-1.0.0", "succeeded")], kinds
    assert all(r["operator"] == "admin" for r in history)
    changes = json.loads(h.relctl("service", "history", svc, "--env", "prod", "--output",
                                  "json").stdout)
    assert [(c["key"], c["new"], c["by"]) for c in changes if c["key"] == "replicas"][-1] == \
        ("replicas", "3", "admin")
    assert h.relctl_json("service", "show", svc, "--env", "prod")["replicas"] == 3
    # The approvals the browser gave, on the records.
    ok, denied = (h.relctl_json("show", rid) for rid in awaiting)
    assert ok["status"] == "succeeded" and ok["approvals"][0]["user"] == approver
    assert denied["status"] == "cancelled"
    assert denied["error"] == f"denied by {approver}: not this week", denied["error"]
