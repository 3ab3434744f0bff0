"""Apply and track: releases go all the way, fail for the right reasons, never overlap."""
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from conftest import start_stack, stop_stack
from harness import REPO, Harness
from releases import ACTIVE, TERMINAL, deploy, record, setup_service, wait_status


def kubectl(h, *args):
    proc = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def namespace_of(h, svc):
    return h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]


def results_of(h, ids, timeout=60):
    msgs = h.consume("results", timeout=timeout,
                     until=lambda ms: set(ids) <= {m.json()["release_id"] for m in ms})
    return [m for m in msgs if m.json()["release_id"] in ids]


def test_good_release_succeeds_and_runs_new_image(harness):
    h = harness
    svc = setup_service(h, versions=("1.0.0", "1.1.0"), replicas=3)
    first = deploy(h, svc, "1.0.0")
    wait_status(h, first, "succeeded")
    # `deploy --wait` follows the second to the end and exits 0 on success.
    proc = h.relctl("deploy", "--service", svc, "--env", "prod", "--version", "1.1.0", "--wait",
                    timeout=120)
    assert "successfully rolled out" in proc.stdout and "succeeded" in proc.stdout, proc.stdout
    ns = namespace_of(h, svc)
    image = kubectl(h, "get", "deploy", svc, "-n", ns, "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}")
    assert image == f"{svc}:1.1.0"
    ready = kubectl(h, "get", "deploy", svc, "-n", ns, "-o", "jsonpath={.status.readyReplicas}")
    assert ready == "3"
    rec = h.relctl_json("history", "--service", svc, "--limit", "1")[0]
    assert rec["status"] == "succeeded" and rec["duration_ms"] >= 0 and rec["version"] == "1.1.0"
    full = record(h, rec["id"])
    messages = [e["message"] for e in full["timeline"]]
    progress = [e["message"] for e in full["timeline"] if e["event"] == "progress"]
    assert progress and progress[-1].startswith(f"deployment {svc} successfully rolled out"), \
        messages
    assert any(m.startswith("applied Deployment") for m in messages), messages


def test_bad_image_fails_by_progress_deadline_with_pod_logs(harness):
    h = harness
    svc = setup_service(h, versions=("fail-1",))
    rid = deploy(h, svc, "fail-1")
    rec = wait_status(h, rid, TERMINAL, timeout=120)
    assert rec["status"] == "failed"
    assert "exceeded its progress deadline" in rec["error"], rec["error"]
    assert rec["pods"], rec
    pod = rec["pods"][0]
    assert pod["reason"] == "CrashLoopBackOff" and pod["phase"] in ("Pending", "Running")
    assert "cannot connect to database" in pod["log_tail"]
    shown = h.relctl("show", rid).stdout
    assert "cannot connect to database" in shown and "CrashLoopBackOff" in shown, shown
    # watch of an ended release prints its end and exits 1 for a failure.
    assert h.relctl("watch", rid, check=False).returncode == 1


def test_release_timeout_fails_before_the_deadline(harness):
    h = harness
    svc = setup_service(h, versions=("bad-7",), timeout="2s")
    rid = deploy(h, svc, "bad-7")
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed" and rec["error"].startswith("timed out"), rec["error"]
    assert any(p["reason"] == "ImagePullBackOff" for p in rec["pods"]), rec["pods"]
    assert rec["duration_ms"] < 20000


def kubesim_applies(h):
    return json.loads(kubectl(h, "get", "--raw", "/kubesim/applies"))


def test_two_releases_of_one_service_never_overlap(harness):
    h = harness
    svc = setup_service(h, versions=("slow-1", "2.0.0"), replicas=2)
    first = deploy(h, svc, "slow-1")
    wait_status(h, first, ACTIVE)
    second = deploy(h, svc, "2.0.0")
    r1 = wait_status(h, first, "succeeded", timeout=120)
    r2 = wait_status(h, second, "succeeded", timeout=120)
    start2 = [e["at"] for e in r2["timeline"] if e["event"] == "rendering"][0]
    assert start2 >= r1["finished_at"], (start2, r1["finished_at"])
    # kubesim's own record: every write of the second came after the first's last write.
    writes = [a for a in kubesim_applies(h) if a.get("name") == svc]
    images = [a.get("images") or a.get("image") for a in writes]
    flat = [json.dumps(i) for i in images]
    first_idx = [i for i, im in enumerate(flat) if "slow-1" in im]
    second_idx = [i for i, im in enumerate(flat) if "2.0.0" in im]
    assert first_idx and second_idx and max(first_idx) < min(second_idx), flat


def test_supersede_ends_the_running_release(harness):
    h = harness
    svc = setup_service(h, versions=("bad-3", "3.0.0"), policy="supersede")
    first = deploy(h, svc, "bad-3")
    wait_status(h, first, "progressing")
    second = deploy(h, svc, "3.0.0")
    r1 = wait_status(h, first, "superseded", timeout=60)
    assert second in r1["error"]
    wait_status(h, second, "succeeded", timeout=120)
    statuses = sorted(m.json()["status"] for m in results_of(h, [first, second]))
    assert statuses == ["succeeded", "superseded"]
    # The superseded release's result was owed until render's batch delivered it (a
    # redelivered request would find nothing to supersede), then no longer: no sweep sends
    # it again. The mark goes after the broker's delivery report, which can come after the
    # message is readable, so wait for it.
    h.wait_for(lambda: h.psql(f"SELECT count(*) FROM release_results_owed"
                              f" WHERE release_id = '{first}'") == [["0"]],
               30, "the superseded release's owed result cleared after its delivery")
    assert len(results_of(h, [first, second])) == 2


def test_track_worker_killed_mid_rollout_release_still_ends_once(harness):
    h = harness
    svc = setup_service(h, versions=("slow-9",), replicas=4)
    rid = deploy(h, svc, "slow-9")
    wait_status(h, rid, "progressing")
    h.stack.run("worker", "kill", "track")
    h.stack.run("worker", "start", "track")
    rec = wait_status(h, rid, TERMINAL, timeout=120)
    assert rec["status"] == "succeeded", rec
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1
    assert len(results_of(h, [rid])) == 1


def test_results_one_valid_message_per_release(harness):
    h = harness
    svc = setup_service(h, versions=("4.0.0", "bad-4"))
    ok = deploy(h, svc, "4.0.0")
    wait_status(h, ok, "succeeded")
    bad = deploy(h, svc, "bad-4")
    h.relctl("cancel", bad)
    wait_status(h, bad, "cancelled")
    schema = json.loads(Path(REPO, "schemas", "relfleet.result.v1.json").read_text())
    msgs = results_of(h, [ok, bad])
    by_id = {}
    for m in msgs:
        body = m.json()
        jsonschema.Draft7Validator(schema).validate(body)
        assert m.key.decode() == f"prod/{svc}"
        by_id.setdefault(body["release_id"], []).append(m.value)
    assert set(by_id) == {ok, bad}
    # Duplicates could only be byte-identical copies after a crash; none happened here.
    assert all(len(v) == 1 for v in by_id.values()), by_id
    assert json.loads(by_id[bad][0])["status"] == "cancelled"


def test_each_env_maps_to_its_cluster(stack_factory):
    # `staging` maps to a context the kubeconfig does not have; `prod` to the current one.
    s = stack_factory.start(extra_env={"RELFLEET_CLUSTERS": "staging=no-such-context,prod=kubesim"})
    h = Harness(s)
    svc = setup_service(h, env="staging")
    setup_service(h, service=svc, env="prod")
    bad = deploy(h, svc, "1.0.0", "staging")
    rec = wait_status(h, bad, TERMINAL)
    assert rec["status"] == "failed" and "no-such-context" in rec["error"], rec["error"]
    good = deploy(h, svc, "1.0.0", "prod")
    assert wait_status(h, good, TERMINAL, timeout=90)["status"] == "succeeded"


def test_supersede_when_redis_lost_the_lock(harness):
    h = harness
    svc = setup_service(h, versions=("bad-8", "8.0.0"), policy="supersede")
    first = deploy(h, svc, "bad-8")
    wait_status(h, first, "progressing")
    # Redis loses the key (restart, eviction): PostgreSQL still holds the active release.
    url = h.env["RELFLEET_REDIS_URL"].split("//")[1].split("/")[0]
    host, port = url.rsplit(":", 1)
    subprocess.run(["redis-cli", "-h", host, "-p", port, "DEL", f"relfleet:lock:prod/{svc}"],
                   check=True, capture_output=True, timeout=30)
    second = deploy(h, svc, "8.0.0")
    r1 = wait_status(h, first, "superseded", timeout=60)
    assert second in r1["error"]
    assert wait_status(h, second, TERMINAL, timeout=120)["status"] == "succeeded"


@pytest.fixture(scope="module")
def verbose_stack():
    """A stack whose programs keep no prepared statements (pg_prepared_statements=off, as
    behind a PgBouncer that cannot keep them), whose PostgreSQL logs every statement and
    whose kubesim logs every request it answers; a Harness of it."""
    s = start_stack(extra_env={"RELFLEET_PG_PREPARED_STATEMENTS": "off",
                               "RELFLEET_KUBESIM_LOG_LEVEL": "debug"})
    h = Harness(s)
    # The stack's user is the server's superuser: statements are logged from here on.
    h.psql("ALTER SYSTEM SET log_statement = 'all'")
    h.psql("SELECT pg_reload_conf()")
    yield h
    stop_stack(s)


def test_releases_go_through_with_prepared_statements_off(verbose_stack):
    """Every program runs its SQL unnamed, and releases and a rollback still go all the way."""
    h = verbose_stack
    svc = setup_service(h, versions=("1.0.0", "1.1.0"))
    for version in ("1.0.0", "1.1.0"):
        rid = deploy(h, svc, version)
        assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded"
    back = h.relctl_json("rollback", "--service", svc, "--env", "prod")["release_id"]
    rec = wait_status(h, back, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded" and rec["version"] == "1.0.0", rec
    log = (h.stack.state_dir / "logs" / "postgres.log").read_text(errors="replace")
    assert "execute <unnamed>:" in log, "no statement was logged"
    named = [line for line in log.splitlines() if "execute rf_" in line]
    assert not named, named[:3]


def test_service_that_never_had_a_strategy_is_not_searched_for_gray_leftovers(verbose_stack):
    """Apply looks for a canary or preview Deployment an earlier gray release left behind
    only for a service that has or once had a strategy (test_gray covers the clean-up)."""
    h = verbose_stack
    plain = setup_service(h)
    gray = setup_service(h, strategy=json.dumps({"canary": {"steps": [{"setWeight": 50}]}}))
    for svc in (plain, gray):
        assert wait_status(h, deploy(h, svc, "1.0.0"), TERMINAL, timeout=90)["status"] == \
            "succeeded"
    log = (h.stack.state_dir / "logs" / "kubesim.log").read_text(errors="replace")
    asked = [line for line in log.splitlines() if "/deployments/" in line]
    assert any(f"/deployments/{plain} " in line for line in asked), asked[-5:]
    for leftover in ("canary", "preview"):
        assert not [line for line in asked if f"/deployments/{plain}-{leftover}" in line]
        assert [line for line in asked if f"/deployments/{gray}-{leftover}" in line], asked[-5:]
