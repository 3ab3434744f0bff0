"""Waves (issue 17, part 2): steps in order, at most max-parallel running at once (from the
release records), the failure budget, pause/resume/abort, template rollouts, permissions and
bad input, through the real binaries on the session's stack."""
import json
import subprocess
import threading
from datetime import datetime

import pytest

from harness import bin_path
from test_console import browser_tools  # noqa: F401 (the fixture)
from releases import TEMPLATES, TERMINAL, deploy, setup_service, wait_status


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def max_overlap(releases):
    """The most releases running at one instant, from started_at/finished_at."""
    points = []
    for r in releases:
        if r.get("started_at"):
            points.append((ts(r["started_at"]), 1))
            points.append((ts(r["finished_at"]) if r.get("finished_at") else datetime.max.replace(
                tzinfo=ts(r["started_at"]).tzinfo), -1))
    points.sort(key=lambda p: (p[0], p[1]))  # an end at the same instant frees first
    most = now = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


def group_of(h, n, prefix="wv", **settings):
    group = h.unique_service("g")
    settings = {"timeout": "3s", "replicas": "1", **settings}
    names = []
    for i in range(n):
        svc = setup_service(h, f"{prefix}{i}-{group[-10:]}", versions=("1.0.0", "bad-1", "slow-1"),
                            group=group, **settings)
        names.append(svc)
    return group, sorted(names)


def wave(h, *args):
    return h.relctl_json("wave", "create", "--env", "prod", *args)["id"]


def show(h, wid):
    return h.relctl_json("wave", "show", wid)


def wait_wave(h, wid, pred, what, timeout=90):
    return h.wait_for(lambda: (lambda w: w if pred(w) else None)(show(h, wid)), timeout, what)


def test_steps_run_in_order_and_never_more_than_max_parallel(harness):
    h = harness
    group, names = group_of(h, 7)
    canary = names[3]
    wid = wave(h, "--select", f"group={group}", "--version", "1.0.0", "--max-parallel", "2",
               "--steps", json.dumps([{"services": [canary]}, {"percent": 50}, {"percent": 100}]),
               "--pause-between", "1s", "-m", "steps and limit")
    watch = h.relctl("wave", "watch", wid, check=False, timeout=150)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    w = show(h, wid)
    assert w["status"] == "succeeded" and w["running"] == 0 and w["finished_at"]
    rels = w["releases"]
    assert [r["status"] for r in rels] == ["succeeded"] * 7
    assert rels[0]["service"] == canary and [r["step"] for r in rels] == [1, 2, 2, 2, 3, 3, 3]
    assert [s["size"] for s in w["steps"]] == [1, 3, 3]
    assert max_overlap(rels) == 2
    # Each step starts after every release of the one before ended, plus the pause.
    for step in (2, 3):
        before = max(ts(r["finished_at"]) for r in rels if r["step"] == step - 1)
        first = min(ts(r["started_at"]) for r in rels if r["step"] == step)
        assert (first - before).total_seconds() >= 1.0, (step, before, first)
    # Every release of it is an ordinary release: record, timeline, result.
    rec = h.relctl_json("show", rels[0]["release_id"])
    assert rec["kind"] == "deploy" and rec["version"] == "1.0.0"
    assert rec["description"] == "steps and limit"
    assert f"in wave {wid} (step 1 of 3)" in rec["timeline"][0]["message"]
    listed = h.relctl_json("wave", "list", "--env", "prod", "--limit", "50")
    assert any(x["id"] == wid and x["status"] == "succeeded" for x in listed)


def test_failure_budget_halts_the_wave(harness):
    h = harness
    group, names = group_of(h, 6)
    wid = wave(h, "--select", f"group={group}", "--version", "bad-1", "--max-parallel", "2",
               "--max-failures", "20%")  # 20% of 6 = 1: the second failure halts it
    watch = h.relctl("wave", "watch", wid, check=False, timeout=150)
    assert watch.returncode == 1, watch.stdout + watch.stderr
    w = show(h, wid)
    assert w["status"] == "halted" and w["max_failures"] == 1
    assert w["reason"].startswith("2 of 6 releases failed, more than the budget of 20%"), w["reason"]
    halted_at = ts(next(e["at"] for e in w["events"] if e["event"] == "halted"))
    started = [r for r in w["releases"] if r["started_at"]]
    assert all(ts(r["started_at"]) <= halted_at for r in started)
    # Running ones finished; no new release was created after the halt.
    assert all(r["status"] in TERMINAL for r in started)
    assert sum(r["status"] == "pending" for r in w["releases"]) >= 2
    assert len(w["failures"]) >= 2 and "halted" in watch.stdout


def test_pause_resume_and_abort(harness):
    h = harness
    group, names = group_of(h, 5)
    # The last service is busy with a release of its own (one that never becomes ready,
    # cancelled when the test wants the service free), so its wave release waits queued.
    busy = names[-1]
    h.relctl("service", "set", busy, "--env", "prod", "timeout=120s")
    hold = deploy(h, busy, "bad-1")
    wait_status(h, hold, {"progressing"}, timeout=60)
    wid = wave(h, "--services", ",".join(names), "--version", "1.0.0", "--max-parallel", "5")
    w = wait_wave(h, wid, lambda w: w["counts"]["succeeded"] == 4, "4 of the wave's releases")
    queued = next(r for r in w["releases"] if r["service"] == busy)
    assert queued["status"] == "queued"
    assert h.relctl("wave", "pause", wid, "-m", "look first").returncode == 0
    assert "cannot pause" in h.relctl("wave", "pause", wid, check=False).stderr
    # A paused wave's queued release steps aside: a newer release of its service goes first.
    h.relctl("cancel", hold)
    wait_status(h, hold, "cancelled", timeout=60)
    other = deploy(h, busy, "1.0.0")
    wait_status(h, other, "succeeded", timeout=60)
    assert show(h, wid)["releases"][-1]["status"] == "queued"
    assert h.relctl("wave", "resume", wid).returncode == 0
    wait_wave(h, wid, lambda w: w["status"] == "succeeded", "the resumed wave to succeed")

    # Abort: the queued release ends cancelled with the reason, none starts afterwards.
    hold = deploy(h, busy, "bad-1")
    wait_status(h, hold, {"progressing"}, timeout=60)
    wid = wave(h, "--services", f"{names[0]},{busy}", "--version", "1.0.0", "--max-parallel", "1",
               "--steps", json.dumps([{"services": [busy]}, {"percent": 100}]))
    w = wait_wave(h, wid, lambda w: w["releases"][0]["status"] == "queued", "a queued release")
    out = h.relctl("wave", "abort", wid, "-m", "wrong version")
    assert out.returncode == 0 and "aborted" in out.stdout
    rid = w["releases"][0]["release_id"]
    rec = wait_status(h, rid, "cancelled", timeout=30)
    assert rec["error"] == f"wave {wid} aborted: aborted by admin: wrong version", rec["error"]
    assert rec["started_at"] is None
    w = wait_wave(h, wid, lambda w: w["finished_at"], "the aborted wave to finish")
    assert w["status"] == "aborted" and w["releases"][1]["status"] == "pending"
    assert h.relctl("wave", "watch", wid, check=False).returncode == 1
    assert "cannot resume" in h.relctl("wave", "resume", wid, check=False).stderr
    h.relctl("cancel", hold)
    wait_status(h, hold, "cancelled", timeout=60)


def test_template_rollout_and_redo(harness, tmp_path):
    h = harness
    tpl = "wt-" + h.unique_service("t")[-10:]
    web = (TEMPLATES / "web.yaml").read_text()
    (tmp_path / f"{tpl}.yaml").write_text(web)
    h.relctl("template", "sync", tmp_path)
    group, names = group_of(h, 3, template=tpl)
    firsts = [deploy(h, s, "1.0.0") for s in names]
    for r in firsts:
        wait_status(h, r, "succeeded", timeout=60)
    (tmp_path / f"{tpl}.yaml").write_text(web + "\n# changed\n")
    h.relctl("template", "sync", tmp_path)
    head = h.psql(f"SELECT version FROM template_heads WHERE id = '{tpl}'")[0][0]
    wid = wave(h, "--template", tpl, "--template-version", "latest", "--max-parallel", "3")
    assert h.relctl("wave", "watch", wid, check=False, timeout=120).returncode == 0
    for r in show(h, wid)["releases"]:
        rec = h.relctl_json("show", r["release_id"])
        assert rec["template_id"] == tpl and rec["template_version"] == head
        assert rec["version"] == "1.0.0" and rec["kind"] == "redo" and rec["parent"] in firsts
    wid = wave(h, "--select", f"group={group}", "--redo", "--max-parallel", "1")
    assert h.relctl("wave", "watch", wid, check=False, timeout=120).returncode == 0
    rels = show(h, wid)["releases"]
    assert max_overlap(rels) == 1 and all(r["status"] == "succeeded" for r in rels)


def test_the_limit_holds_between_concurrent_transactions(harness):
    """The database refuses a start past max-parallel whatever the code path: two
    transactions start releases of one wave at once; the one that comes second waits for the
    wave's row and is refused (SQLSTATE RFW01)."""
    h = harness
    env = h.unique_service("e")[-12:]
    wid, r1, r2, r3 = (h.psql("SELECT gen_random_uuid()")[0][0] for _ in range(4))
    # A running wave with no items: the driver creates nothing for it; the releases are
    # made here, in an env without services, and started by hand.
    h.psql(f"INSERT INTO waves (id, env, status, selector, mode, version, max_parallel, steps,"
           f" step_ends, operator, total) VALUES ('{wid}', '{env}', 'running', '{{}}', 'version',"
           f" '1', 2, '[]', '{{3}}', 'test', 3)")

    def make(r, i):
        return (f"INSERT INTO releases (id, service, env, version, kind, operator, status,"
                f" request, wave_id) VALUES ('{r}', 's{i}', '{env}', '1', 'deploy', 'test',"
                f" 'queued', '{{}}', '{wid}');")

    start = "UPDATE releases SET status = 'applying', started_at = clock_timestamp() WHERE id = "
    tag = wid[:8]
    first = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", h.env["RELFLEET_PG_DSN"]],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True,
                             env=dict(h.env, PGAPPNAME=f"first-{tag}"))
    first.stdin.write(f"BEGIN; {make(r1, 1)} {make(r2, 2)} {start}'{r1}'; {start}'{r2}';"
                      f" SELECT 'held';\n")
    first.stdin.flush()
    h.wait_for(lambda: h.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                              f" 'first-{tag}' AND state = 'idle in transaction'")[0][0] == "1",
               30, "the first transaction to hold two starts")
    second = {}

    def run_second():
        second["p"] = subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", h.env["RELFLEET_PG_DSN"], "-c",
             f"{make(r3, 3)} {start}'{r3}'"], capture_output=True, text=True, timeout=60,
            env=dict(h.env, PGAPPNAME=f"second-{tag}"))

    t = threading.Thread(target=run_second)
    t.start()
    h.wait_for(lambda: h.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                              f" 'second-{tag}' AND wait_event_type = 'Lock'")[0][0] == "1",
               30, "the second start to wait for the wave's row")
    first.stdin.write("COMMIT;\n")
    first.stdin.close()
    first.wait(timeout=30)
    t.join(timeout=60)
    p = second["p"]
    assert p.returncode != 0 and f"wave {wid} runs 2 of 2 releases already" in p.stderr, p.stderr
    assert h.psql(f"SELECT running, (SELECT count(*) FROM releases WHERE id = '{r3}') FROM waves"
                  f" WHERE id = '{wid}'")[0] == ["2", "0"]
    # Ending one frees its slot in the same transaction; then the third may start.
    h.psql(f"UPDATE releases SET status = 'cancelled', finished_at = clock_timestamp()"
           f" WHERE id = '{r1}'; {make(r3, 3)} {start}'{r3}'")
    assert h.psql(f"SELECT running, ended FROM waves WHERE id = '{wid}'")[0] == ["2", "1"]
    h.psql(f"UPDATE waves SET status = 'aborted' WHERE id = '{wid}';"
           f" UPDATE releases SET status = 'cancelled', finished_at = clock_timestamp()"
           f" WHERE wave_id = '{wid}' AND finished_at IS NULL")


def test_permissions_and_bad_input(harness):
    h = harness
    group, names = group_of(h, 2)
    user = h.unique_service("u")
    h.relctl("user", "add", user)
    h.relctl("user", "grant", user, "releaser", "--service", names[0], "--env", "prod")
    h.relctl("user", "grant", user, "viewer", "--service", "*", "--env", "prod")
    token = h.relctl("user", "token", user).stdout.strip()
    env = dict(h.env, RELFLEET_TOKEN=token)

    def as_user(*args):
        return subprocess.run([str(bin_path("relctl")), *args], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    p = as_user("wave", "create", "--select", f"group={group}", "--version", "1.0.0", "--env",
                "prod", "--max-parallel", "1")
    assert p.returncode == 1
    assert (f"permission denied: user '{user}' has no releaser role for service '{names[1]}'"
            " in env 'prod'") in p.stderr
    wid = wave(h, "--select", f"group={group}", "--version", "slow-1", "--max-parallel", "1")
    p = as_user("wave", "pause", wid)
    assert p.returncode == 1 and "permission denied" in p.stderr
    assert as_user("wave", "show", wid).returncode == 0
    h.relctl("wave", "abort", wid)

    usage = [
        (["--version", "1"], "one of --select group=G, --services and --template"),
        (["--select", f"group={group}", "--version", "1", "--redo"], "one of --version, --redo"),
        (["--select", f"group={group}", "--template-version", "v2"], "takes 'latest'"),
        (["--select", f"group={group}", "--version", "1", "--steps", "[{\"percent\": 50}]"],
         "the steps leave 1 selected services out"),
        (["--select", f"group={group}", "--version", "1", "--steps", "[{\"services\": [\"x\"]}]"],
         "service 'x' of a step is not one the wave selects"),
        (["--select", f"group={group}", "--version", "1", "--max-failures", "many"],
         "--max-failures takes a count or a percentage"),
        (["--select", f"group={group}", "--version", "1", "--pause-between", "soon"],
         "--pause-between takes a duration"),
        (["--select", f"group={group}", "--version", "1", "--steps", "{"], "--steps is not JSON"),
    ]
    for args, msg in usage:
        p = h.relctl("wave", "create", "--env", "prod", "--max-parallel", "2", *args, check=False)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    p = h.relctl("wave", "create", "--env", "prod", "--max-parallel", "2", "--services",
                 f"{names[0]},nope-{group[-6:]}", "--version", "1", check=False)
    assert p.returncode == 1 and f"unknown service 'nope-{group[-6:]}' in env 'prod'" in p.stderr
    p = h.relctl("wave", "create", "--env", "prod", "--max-parallel", "2", "--select",
                 "group=none-such", "--version", "1", check=False)
    assert p.returncode == 1 and "no service in env 'prod' has group 'none-such'" in p.stderr
    p = h.relctl("wave", "show", "00000000-0000-0000-0000-000000000000", check=False)
    assert p.returncode == 1 and "no wave" in p.stderr


def test_api_creates_shows_and_commands_waves(harness):
    import requests

    h = harness
    group, names = group_of(h, 2)
    url = h.env["RELFLEET_API_URL"] + "/api/v1/waves"
    auth = {"Authorization": "Bearer " + h.env["RELFLEET_TOKEN"]}
    r = requests.post(url, headers=auth, timeout=30, json={
        "env": "prod", "select": {"group": group}, "version": "slow-1", "max_parallel": 1,
        "steps": [{"services": [names[1]]}, {"percent": 100}], "description": "from the api"})
    assert r.status_code == 201, r.text
    w = r.json()
    assert w["status"] == "running" and w["allowed"] == {"pause": True, "resume": False,
                                                         "abort": True}
    assert [x["service"] for x in w["releases"]] == [names[1], names[0]]
    r = requests.post(f"{url}/{w['id']}/pause", headers=auth, json={"message": "wait"}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    assert r.json()["allowed"]["resume"] and r.json()["reason"] == "paused by admin: wait"
    r = requests.post(f"{url}/{w['id']}/pause", headers=auth, timeout=30)
    assert r.status_code == 409 and "cannot pause" in r.json()["error"]
    listed = requests.get(url, headers=auth, params={"env": "prod"}, timeout=30).json()["waves"]
    assert any(x["id"] == w["id"] for x in listed)
    # A viewer sees it, without buttons, and may not change it.
    user = h.unique_service("v")
    h.relctl("user", "add", user)
    h.relctl("user", "grant", user, "viewer", "--service", "*", "--env", "prod")
    viewer = {"Authorization": "Bearer " + h.relctl("user", "token", user).stdout.strip()}
    r = requests.get(f"{url}/{w['id']}", headers=viewer, timeout=30)
    assert r.status_code == 200 and not any(r.json()["allowed"].values())
    r = requests.post(f"{url}/{w['id']}/abort", headers=viewer, timeout=30)
    assert r.status_code == 403 and "permission denied" in r.json()["error"]
    r = requests.post(url, headers=viewer, timeout=30, json={
        "env": "prod", "select": {"group": group}, "version": "1.0.0", "max_parallel": 1})
    assert r.status_code == 403
    r = requests.post(url, headers=auth, timeout=30, json={
        "env": "prod", "select": {"group": group}, "version": "1.0.0", "max_parallel": 0})
    assert r.status_code == 400 and "--max-parallel" in r.json()["error"]
    r = requests.post(f"{url}/{w['id']}/abort", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "aborted"
    assert requests.get(f"{url}/00000000-0000-0000-0000-000000000000", headers=auth,
                        timeout=30).status_code == 404


def test_console_wave_page(harness, browser_tools):
    """The console's wave page in the real Chromium (tests/browser/waves.js)."""
    import os

    from test_console import ARTIFACTS, BROWSER_DIR, _run

    h = harness
    group, names = group_of(h, 2)
    wid = wave(h, "--select", f"group={group}", "--version", "1.0.0", "--max-parallel", "1",
               "--steps", json.dumps([{"percent": 50}, {"percent": 100}]))
    h.relctl("wave", "pause", wid)
    wid2 = wave(h, "--services", names[0], "--version", "1.0.0", "--max-parallel", "1")
    h.relctl("wave", "pause", wid2)
    user = h.unique_service("v")
    h.relctl("user", "add", user)
    h.relctl("user", "grant", user, "viewer", "--service", "*", "--env", "prod")
    env = dict(os.environ, RELFLEET_API_URL=h.env["RELFLEET_API_URL"],
               CONSOLE_ADMIN_TOKEN=h.env["RELFLEET_TOKEN"],
               CONSOLE_VIEWER_TOKEN=h.relctl("user", "token", user).stdout.strip(),
               CONSOLE_WAVE=wid, CONSOLE_WAVE2=wid2, CONSOLE_ARTIFACTS=str(ARTIFACTS))
    proc = _run(["node", str(BROWSER_DIR / "waves.js")], env=env, cwd=BROWSER_DIR, timeout=300)
    assert proc.returncode == 0, (f"{browser_tools}\nstdout:\n{proc.stdout}\nstderr:\n"
                                  f"{proc.stderr}\nscreenshots in {ARTIFACTS}")
    assert proc.stdout.rstrip().splitlines()[-1] == "ok: waves"
