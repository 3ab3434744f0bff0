"""Promotion between environments (requires, soak, relctl advance) and approvals (four eyes,
N approvals, deny, timeout, no lock held while awaiting), through the real binaries."""
import json
import re
import shutil
import subprocess

import pytest

from harness import bin_path
from receivers import HttpReceiver
from releases import TEMPLATES, deploy, record, setup_service, wait_status


def relctl_as(h, token, *args, check=True):
    env = dict(h.env, RELFLEET_TOKEN=token)
    proc = subprocess.run([str(bin_path("relctl")), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"relctl {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def approvers(stack):
    """Two approvers of every service in prod, an outsider, and the stack's admin (the
    requester of every release here) made an approver too: four eyes must still refuse it."""
    from harness import Harness

    h = Harness(stack)
    tag = h.unique_service("u")[-8:]
    tokens = {}
    for who in ("alice", "bob", "carol"):
        name = f"{who}-{tag}"
        h.relctl("user", "add", name)
        if who != "carol":
            h.relctl("user", "grant", name, "approver", "--service", "*", "--env", "prod")
        tokens[who] = h.relctl("user", "token", name).stdout.strip()
        tokens[who + "_name"] = name
    h.relctl("user", "grant", "admin", "approver", "--service", "*", "--env", "prod")
    tokens["admin"] = h.env["RELFLEET_TOKEN"]
    return tokens


def results_of(h, rid, timeout=60):
    msgs = h.consume("results", timeout=timeout,
                     until=lambda ms: any(m.json().get("release_id") == rid
                                          for m in ms if m.value.startswith(b"{")))
    return [m.json() for m in msgs if m.value.startswith(b"{") and m.json().get("release_id") == rid]


def test_requires_and_soak_reject_deploys_with_the_reason(harness):
    h = harness
    svc = setup_service(h, env="test", versions=("1.0.0", "bad-1"), timeout="2s")
    setup_service(h, svc, env="prod", requires="test", soak="1h", namespace="prod-" + svc[-10:])

    rec = wait_status(h, deploy(h, svc, "1.0.0"), "rejected")
    assert rec["error"] == (f"version '1.0.0' of service '{svc}' has not succeeded in env 'test'"
                            " (required before env 'prod')"), rec["error"]

    ok = deploy(h, svc, "1.0.0", "test")
    wait_status(h, ok, "succeeded", timeout=90)
    rec = wait_status(h, deploy(h, svc, "1.0.0"), "rejected")
    assert re.fullmatch(rf"version '1\.0\.0' of service '{svc}' has run in env 'test' for \d+s"
                        r" of its 1h soak \(required before env 'prod'\)", rec["error"]), rec["error"]
    assert rec["started_at"] is None and rec["fence"] is None

    # An hour and more later (the success moved back in time), it has soaked.
    h.psql(f"UPDATE releases SET created_at = created_at - interval '2 hours', started_at ="
           f" started_at - interval '2 hours', finished_at = finished_at - interval '2 hours'"
           f" WHERE id = '{ok}'")
    wait_status(h, deploy(h, svc, "1.0.0"), "succeeded", timeout=90)

    # A failed release in test after the success breaks the soak.
    bad = deploy(h, svc, "bad-1", "test")
    wait_status(h, bad, "failed", timeout=60)
    rec = wait_status(h, deploy(h, svc, "1.0.0"), "rejected")
    assert rec["error"] == (f"version '1.0.0' of service '{svc}' did not soak in env 'test':"
                            f" release {bad} failed after it succeeded there"), rec["error"]
    # requires without soak only asks for the success.
    h.relctl("service", "set", svc, "--env", "prod", "soak=")
    wait_status(h, deploy(h, svc, "1.0.0"), "succeeded", timeout=90)
    show = h.relctl_json("service", "show", svc, "--env", "prod")
    assert show["requires"] == "test" and show["soak"] is None


def test_advance_releases_what_runs_in_the_from_env(harness, tmp_path):
    h = harness
    tpl = h.unique_service("adv")
    body = (TEMPLATES / "web.yaml").read_text()

    def sync(n):
        (tmp_path / f"{tpl}.yaml").write_text(body + f"# revision {n}\n")
        h.relctl("template", "sync", tmp_path)

    sync(1)
    svc = setup_service(h, env="test", versions=("1.0.0", "1.1.0"))
    for env in ("test", "prod"):
        h.relctl("service", "set", svc, "--env", env, f"template={tpl}")
    first = deploy(h, svc, "1.0.0", "test")
    r1 = wait_status(h, first, "succeeded", timeout=90)
    sync(2)
    second = deploy(h, svc, "1.1.0", "test")
    r2 = wait_status(h, second, "succeeded", timeout=90)
    sync(3)  # the head moves on: advance still takes what ran in test
    assert r1["template_version"] != r2["template_version"]

    out = h.relctl_json("advance", "--service", svc, "--from", "test", "--to", "prod")
    assert out["parent"] == second
    rec = wait_status(h, out["release_id"], "succeeded", timeout=90)
    assert (rec["env"], rec["version"], rec["kind"], rec["parent"]) == ("prod", "1.1.0", "deploy",
                                                                        second)
    assert (rec["template_id"], rec["template_version"]) == (tpl, r2["template_version"])
    assert rec["description"] == f"advance from test (release {second})"

    proc = h.relctl("advance", "--service", svc, "--from", "test", "--to", "prod", "--version",
                    "1.0.0", "-m", "back to the first", "--wait")
    assert "succeeded" in proc.stdout.splitlines()[-1], proc.stdout
    rid = re.search(r"release ([0-9a-f-]{36}) succeeded", proc.stdout).group(1)
    rec = record(h, rid)
    assert (rec["version"], rec["template_version"], rec["parent"]) == (
        "1.0.0", r1["template_version"], first)

    proc = h.relctl("advance", "--service", svc, "--from", "test", "--to", "prod", "--version",
                    "9.9.9", check=False)
    assert proc.returncode == 1 and (f"cannot advance service '{svc}': version '9.9.9' has not"
                                     " succeeded in env 'test'") in proc.stderr, proc.stderr
    proc = h.relctl("advance", "--service", svc, "--from", "prod", "--to", "prod", check=False)
    assert proc.returncode == 2


def test_four_eyes_and_n_approvals(harness, approvers):
    h, a = harness, approvers
    svc = setup_service(h, approvals=2)
    rid = deploy(h, svc, "1.0.0")
    rec = wait_status(h, rid, "awaiting_approval")
    assert rec["started_at"] is None and rec["fence"] is None and rec["approvals_needed"] == 2
    assert any(e["event"] == "awaiting_approval" and "needs 2 approvals" in e["message"]
               for e in rec["timeline"])
    status = h.relctl_json("status")
    assert any(r["id"] == rid and r["approvals"] == 0 for r in status["awaiting_approval"])
    assert "awaiting approval: " in h.relctl("status").stdout

    proc = relctl_as(h, a["admin"], "approve", rid, check=False)
    assert proc.returncode == 1 and "four eyes" in proc.stderr, proc.stderr
    proc = relctl_as(h, a["carol"], "approve", rid, check=False)
    assert proc.returncode == 1 and "has no approver role" in proc.stderr, proc.stderr

    out = json.loads(relctl_as(h, a["alice"], "approve", rid, "-m", "looks good",
                               "--output", "json").stdout)
    assert (out["status"], out["approvals"], out["needed"]) == ("awaiting_approval", 1, 2)
    proc = relctl_as(h, a["alice"], "approve", rid, check=False)
    assert proc.returncode == 1 and "already decided" in proc.stderr
    assert record(h, rid)["status"] == "awaiting_approval"

    proc = relctl_as(h, a["bob"], "approve", rid)
    assert "(2 of 2): queued" in proc.stdout, proc.stdout
    rec = wait_status(h, rid, "succeeded", timeout=90)
    assert [(x["user"], x["decision"]) for x in rec["approvals"]] == [
        (a["alice_name"], "approved"), (a["bob_name"], "approved")]
    assert rec["approvals"][0]["comment"] == "looks good"
    approved = [e for e in rec["timeline"] if e["event"] == "approved"]
    assert [e["data"]["user"] for e in approved] == [a["alice_name"], a["bob_name"]]
    assert f"approved by {a['alice_name']} (1 of 2): looks good" == approved[0]["message"]
    shown = h.relctl("show", rid).stdout
    assert f"approved by {a['alice_name']} at " in shown, shown
    results = results_of(h, rid)
    assert len(results) == 1 and results[0]["status"] == "succeeded"
    assert [x["user"] for x in results[0]["approvals"]] == [a["alice_name"], a["bob_name"]]


def test_deny_cancels_with_the_reason_and_one_result(harness, approvers):
    h, a = harness, approvers
    svc = setup_service(h, approvals=1)
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, "awaiting_approval")
    assert relctl_as(h, a["alice"], "deny", rid, check=False).returncode == 2
    relctl_as(h, a["alice"], "deny", rid, "-m", "not during the freeze")
    rec = wait_status(h, rid, "cancelled")
    assert rec["error"] == f"denied by {a['alice_name']}: not during the freeze"
    assert [(x["user"], x["decision"]) for x in rec["approvals"]] == [(a["alice_name"], "denied")]
    results = results_of(h, rid)
    assert len(results) == 1 and results[0]["status"] == "cancelled", results
    assert results[0]["error"] == rec["error"]
    proc = relctl_as(h, a["bob"], "approve", rid, check=False)
    assert proc.returncode == 1 and "not awaiting approval (it is cancelled)" in proc.stderr


def test_approval_timeout_cancels(harness, approvers):
    h = harness
    svc = setup_service(h, approvals=1)
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, "awaiting_approval")
    # The default approval_timeout is 24h: the wait began a day and a minute ago.
    h.psql(f"UPDATE releases SET awaiting_since = awaiting_since - interval '24 hours 1 minute'"
           f" WHERE id = '{rid}'")
    rec = wait_status(h, rid, "cancelled", timeout=30)
    assert rec["error"] == "approval timed out after 24h (0 of 1 approvals)", rec["error"]
    results = results_of(h, rid)
    assert len(results) == 1 and results[0]["status"] == "cancelled"


def test_awaiting_holds_no_lock(harness, approvers):
    """A release awaiting approval blocks neither another service nor a later release of its
    own service that was approved first; approved, it queues behind the running one."""
    h, a = harness, approvers
    svc = setup_service(h, versions=("1.0.0", "1.1.0", "slow-1"), approvals=1)
    setup_service(h, svc, env="test", namespace="test-" + svc[-10:])
    first = deploy(h, svc, "1.0.0")
    wait_status(h, first, "awaiting_approval")
    lock = h.relctl_json("service", "show", svc, "--env", "prod")  # exists; no fence taken
    assert lock["approvals"] == 1

    other_env = deploy(h, svc, "1.0.0", "test")
    wait_status(h, other_env, "succeeded", timeout=90)
    second = deploy(h, svc, "1.1.0")
    wait_status(h, second, "awaiting_approval")
    relctl_as(h, a["alice"], "approve", second)
    wait_status(h, second, "succeeded", timeout=90)
    assert record(h, first)["status"] == "awaiting_approval"

    # Approved while another release of the service runs: it waits in the queue (policy queue).
    slow = deploy(h, svc, "slow-1")
    wait_status(h, slow, "awaiting_approval")
    relctl_as(h, a["bob"], "approve", slow)
    wait_status(h, slow, ("applying", "progressing"), timeout=60)
    relctl_as(h, a["alice"], "approve", first)
    rec = wait_status(h, first, "queued")
    assert rec["started_at"] is None
    wait_status(h, slow, "succeeded", timeout=120)
    rec = wait_status(h, first, "succeeded", timeout=90)
    assert rec["started_at"] >= record(h, slow)["finished_at"]


def test_subscribers_hear_of_awaiting_approval(harness, approvers):
    h, a = harness, approvers
    svc = setup_service(h, approvals=1)
    receiver = HttpReceiver().start()
    try:
        hook = receiver.hook("approvals")
        h.relctl("notify", "add", svc, "--env", "prod", "--channel", "webhook", "--target", hook,
                 "--on", "awaiting_approval,cancelled")
        rid = deploy(h, svc, "1.0.0")
        wait_status(h, rid, "awaiting_approval")
        got = h.wait_for(lambda: receiver.of("approvals"), 30, "the awaiting notification")
        body = json.loads(got[0]["body"])
        assert (body["release_id"], body["status"]) == (rid, "awaiting_approval"), body
        assert body["event_id"] != rid
        relctl_as(h, a["alice"], "deny", rid, "-m", "no")
        got = h.wait_for(lambda: len(receiver.of("approvals")) >= 2 and receiver.of("approvals"),
                         30, "the result notification")
        assert json.loads(got[1]["body"])["status"] == "cancelled"
        assert len(record(h, rid)["notifications"]) == 2
    finally:
        receiver.stop()
    proc = h.relctl("notify", "add", svc, "--env", "prod", "--channel", "webhook", "--target",
                    hook, "--on", "queued", check=False)
    assert proc.returncode == 2 and "awaiting_approval" in proc.stderr
    assert shutil.which("psql")


def test_api_approve_and_deny(harness, approvers):
    """POST /api/v1/releases/ID/approve|deny: the same rules as relctl, as HTTP statuses, and
    the buttons the record offers each user."""
    import requests

    h, a = harness, approvers
    url = h.env["RELFLEET_API_URL"] + "/api/v1/releases/"

    def post(token, rid, action, body=None):
        return requests.post(url + f"{rid}/{action}", json=body, timeout=60,
                             headers={"Authorization": "Bearer " + token})

    def actions(token, rid):
        r = requests.get(url + rid, timeout=60, headers={"Authorization": "Bearer " + token})
        assert r.status_code == 200, r.text
        return r.json()["actions"]

    svc = setup_service(h, approvals=1)
    rid, other = deploy(h, svc, "1.0.0"), deploy(h, svc, "1.0.0")
    for x in (rid, other):
        wait_status(h, x, "awaiting_approval")
    assert "approve" not in actions(a["admin"], rid) and "cancel" in actions(a["admin"], rid)
    assert actions(a["alice"], rid) == ["approve", "deny"]
    r = post(a["admin"], rid, "approve")
    assert r.status_code == 403 and "four eyes" in r.json()["error"], r.text
    r = post(a["carol"], rid, "approve")
    assert r.status_code == 403 and "no approver role" in r.json()["error"], r.text
    r = post(a["alice"], rid, "deny", {})
    assert r.status_code == 400 and r.json()["field"] == "message", r.text
    r = post(a["alice"], rid, "approve", {"message": "ship it"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["approvals"], r.json()["needed"]) == ("queued", 1, 1)
    assert post(a["bob"], rid, "approve").status_code == 409
    r = post(a["bob"], other, "deny", {"message": "one is enough"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert wait_status(h, rid, "succeeded", timeout=90)["approvals"][0]["comment"] == "ship it"
    assert post(a["bob"], "not-an-id", "approve").status_code == 404
