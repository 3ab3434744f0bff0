"""relctl as people and scripts use it: usage, output formats, configuration, failures."""
import json
import os
import subprocess
import time

from harness import bin_path
from releases import TEMPLATES, setup_service


def run(env, *args, timeout=60):
    return subprocess.run([str(bin_path("relctl")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_usage_and_help(harness):
    env = harness.env
    for verb in ["deploy", "show", "watch", "history", "cancel", "promote", "abort", "service",
                 "template", "image", "db"]:
        p = run(env, verb, "--help")
        assert p.returncode == 0 and p.stdout.startswith(f"usage: relctl {verb}"), (verb, p)
    assert run(env, "frobnicate").returncode == 2
    assert run(env, "deploy", "--service", "x").returncode == 2
    assert run(env, "history", "--limit", "zero").returncode == 2
    p = run(env, "deploy", "--service", "Bad_Name", "--env", "prod", "--version", "1")
    assert p.returncode == 2 and "service" in p.stderr, p.stderr


def test_unknown_setting_is_refused_by_name(harness):
    env = dict(harness.env, RELFLEET_PG_DNS="x")
    p = run(env, "history")
    assert p.returncode == 2 and "RELFLEET_PG_DNS" in p.stderr, p.stderr
    env = dict(harness.env, RELFLEET_KAFKA_TIMEOUT_MS="soon")
    p = run(env, "history")
    assert p.returncode == 2 and "'soon' is not an integer" in p.stderr, p.stderr


def test_deploy_fails_clearly_and_in_bounded_time_without_broker(harness):
    env = dict(harness.env, RELFLEET_KAFKA_BROKERS="127.0.0.1:1", RELFLEET_KAFKA_TIMEOUT_MS="2000")
    start = time.monotonic()
    p = run(env, "deploy", "--service", "web", "--env", "prod", "--version", "1.0.0")
    took = time.monotonic() - start
    assert p.returncode == 1, p
    assert "cannot publish to 'relfleet.requests'" in p.stderr, p.stderr
    assert took < 20, took


def test_service_configuration_and_history(harness):
    h = harness
    svc = setup_service(h, replicas=2)
    p = h.relctl("service", "set", svc, "--env", "prod", "replicas=abc", check=False)
    assert p.returncode == 1 and "cannot set 'replicas' to 'abc': " in p.stderr, p.stderr
    p = h.relctl("service", "set", svc, "--env", "prod", "policy=sometimes", check=False)
    assert p.returncode == 1 and "policy" in p.stderr, p.stderr
    h.relctl("service", "set", svc, "--env", "prod", "replicas=5", "feature_flag=on",
             "timeout=15m")
    show = h.relctl_json("service", "show", svc, "--env", "prod")
    assert show["replicas"] == 5 and show["values"]["feature_flag"] == "on"
    assert show["timeout"] == 900
    # A value that is not one the key takes is a usage error, and undoes the keys before it.
    p = h.relctl("service", "set", svc, "--env", "prod", "replicas=6", "timeout=soon", check=False)
    assert p.returncode == 2, p.stderr
    assert "relctl: timeout: 'soon' is not a duration (600, 600s, 10m, 1h)" in p.stderr
    p = h.relctl("service", "set", svc, "--env", "prod", "replicas=6",
                 'strategy={"canary": {"steps": "x"}}', check=False)
    assert p.returncode == 2 and "relctl: strategy: " in p.stderr, p.stderr
    p = h.relctl("service", "set", svc, "--env", "prod", "replicas=5", "timeout=900s")
    assert p.stdout == "nothing changed\n", p.stdout
    hist = h.relctl_json("service", "history", svc, "--env", "prod")
    changes = [(c["key"], c["old"], c["new"]) for c in hist]
    assert ("replicas", "2", "5") in changes and ("feature_flag", None, "on") in changes
    p = h.relctl("service", "set", h.unique_service(), "--env", "prod", "replicas=1", check=False)
    assert p.returncode == 2 and "needs template=ID" in p.stderr


def test_template_sync_reports_new_changed_unchanged_broken(harness, tmp_path):
    h = harness
    name = h.unique_service("tpl")
    good = tmp_path / f"{name}.yaml"
    good.write_text((TEMPLATES / "web.yaml").read_text())
    out = h.relctl("template", "sync", str(tmp_path)).stdout
    assert out.startswith(f"new       {name} "), out
    out = h.relctl("template", "sync", str(tmp_path)).stdout
    assert out.startswith(f"unchanged {name} "), out
    good.write_text(good.read_text() + "\n# changed\n")
    out = h.relctl("template", "sync", str(tmp_path)).stdout
    assert out.startswith(f"changed   {name} "), out
    (tmp_path / f"{name}-broken.yml").write_text("kind: Deployment\nmetadata: [\n")
    (tmp_path / f"{name}-typo.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: '{{ replcas }}'\n")
    p = h.relctl("template", "sync", str(tmp_path), check=False)
    assert p.returncode == 1
    assert f"broken    {name}-broken" in p.stdout and "line" in p.stdout, p.stdout
    assert f"broken    {name}-typo: placeholder 'replcas' is not a known value" in p.stdout
    assert f"unchanged {name} " in p.stdout
    versions = h.psql(f"SELECT count(*) FROM templates WHERE id = '{name}'")
    assert versions == [["2"]]  # the old version is kept: releases point at it


def test_history_filters_and_json(harness):
    h = harness
    svc = setup_service(h)
    ids = [h.relctl_json("deploy", "--service", svc, "--env", "prod", "--version", "1.0.0")
           ["release_id"] for _ in range(3)]
    h.wait_for(lambda: len(h.relctl_json("history", "--service", svc)) == 3, 60,
               "three releases in history")
    hist = h.relctl_json("history", "--service", svc, "--env", "prod", "--limit", "2")
    assert len(hist) == 2 and {r["id"] for r in hist} <= set(ids)
    assert all(r["service"] == svc for r in hist)
    assert "timeline" not in hist[0]
    assert h.relctl_json("history", "--service", svc, "--env", "test") == []
    assert run(h.env, "show", "00000000-0000-0000-0000-000000000000").returncode == 1
    assert run(h.env, "show", "not-an-id").returncode == 1


def test_status_shows_active_queued_and_failures(harness):
    from releases import ACTIVE, wait_status

    h = harness
    svc = setup_service(h, versions=("bad-5", "1.0.0"), timeout="60s")
    first = h.relctl_json("deploy", "--service", svc, "--env", "prod", "--version", "bad-5")[
        "release_id"]
    wait_status(h, first, ACTIVE)
    second = h.relctl_json("deploy", "--service", svc, "--env", "prod", "--version", "1.0.0")[
        "release_id"]
    h.wait_for(lambda: any(q["id"] == second for q in h.relctl_json("status")["queued"]), 30,
               "the second release to show as queued")
    st = h.relctl_json("status")
    assert any(a["id"] == first and a["service"] == svc for a in st["active"]), st["active"]
    text = h.relctl("status").stdout
    assert first in text and second in text and "queued releases:" in text
    h.relctl("cancel", first)
    wait_status(h, first, "cancelled")
    wait_status(h, second, "succeeded", timeout=90)
    st = h.relctl_json("status")
    assert not any(a["id"] in (first, second) for a in st["active"] + st["queued"])
