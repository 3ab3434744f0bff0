"""The stack's real Prometheus: it scrapes every worker and relfleet-api through the target
files ops/stack keeps (workers started and stopped later too), loads the alert rules of
ops/prometheus and fires one on the workers' real metrics; promtool checks and unit-tests the
rules (and the PrometheusRule under ops/k8s/monitoring carries the same); every query of the
Grafana dashboard runs against it after a release and returns series."""
import json
import shutil
import subprocess

import pytest
import yaml

from harness import REPO
from metrics_exporter import prometheus_query
from releases import deploy, setup_service, wait_status

RULES = REPO / "ops" / "prometheus" / "relfleet.rules.yaml"
RULES_TEST = REPO / "ops" / "prometheus" / "relfleet.rules.test.yaml"
PROMETHEUS_RULE = REPO / "ops" / "k8s" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = REPO / "ops" / "grafana" / "relfleet.json"
# What Grafana puts in for its variables: windows that hold several 1 s scrapes.
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "1h"}


def promtool(*args):
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool is not installed (ops/bootstrap installs Debian's prometheus)")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def query(h, q):
    return prometheus_query(h.env["RELFLEET_PROMETHEUS_URL"], q)


def scraped(h):
    """{instance: up value} of every target the stack's Prometheus scrapes."""
    return {r["metric"]["instance"]: r["value"][1] for r in query(h, "up")}


def test_prometheus_scrapes_the_api_and_every_worker_started_or_stopped(stack, harness):
    h = harness
    rows, _ = stack.status()
    assert rows["prometheus"][2] == "alive", rows
    assert h.env["RELFLEET_PROMETHEUS_URL"] == "http://" + rows["prometheus"][1]

    def workers(state="alive"):
        out = stack.run("worker", "list").stdout.split("\n")
        return {f"{w[0]}-{w[1]}" for w in (line.split() for line in out if line)
                if state is None or w[3] == state}
    # Every live worker and the API, up; a worker that died in an earlier test (its pid file
    # left) is scraped too, and down.
    want, listed = workers() | {"api"}, workers(None) | {"api"}

    def all_up():
        got = scraped(h)
        return all(got.get(i) == "1" for i in want) and set(got) <= listed
    h.wait_for(all_up, 30, f"Prometheus to scrape {sorted(want)}")
    # The stage label is on every series, up included (the alerts group by it).
    stages = {r["metric"]["instance"]: r["metric"]["stage"] for r in query(h, "up")}
    assert all(stages[i] == ("api" if i == "api" else i.rsplit("-", 1)[0]) for i in want), stages
    assert query(h, 'relfleet_messages_produced_total{stage="api"}') or \
        query(h, 'up{instance="api"} == 1')
    # A worker started later is scraped; one stopped is dropped.
    stage, n, _pid = stack.run("worker", "start", "notify").stdout.split()
    h.wait_for(lambda: scraped(h).get(f"{stage}-{n}") == "1", 30, f"{stage}-{n} to be scraped")
    _stage, old, _pid = stack.run("worker", "kill", "notify", "TERM").stdout.split()
    h.wait_for(lambda: f"notify-{old}" not in scraped(h), 30, f"notify-{old} to be dropped")
    assert scraped(h).get(f"{stage}-{n}") == "1"


def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    check = promtool("check", "rules", RULES)
    assert check.returncode == 0 and "SUCCESS: 7 rules found" in check.stdout, \
        check.stdout + check.stderr
    unit = promtool("test", "rules", RULES_TEST)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr
    # Every alert has its input series in the unit tests.
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested == {
        "RelfleetConsumerLagGrowing", "RelfleetMessagesDeadLettered", "RelfleetReleasesTimedOut",
        "RelfleetStageNoReadyWorker", "RelfleetLockRenewalsFailing",
        "RelfleetNotificationsFailing", "RelfleetProduceFailures"}, (alerts, tested)
    # The PrometheusRule carries the same groups, and promtool accepts them as they are there.
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    extracted = tmp_path / "from-prometheusrule.yaml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    check = promtool("check", "rules", extracted)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def after_a_release(stack):
    """The session stack after a release that succeeded, one that timed out and a message
    dead-lettered, once Prometheus has scraped them (the dashboard's and the alerts' series
    exist)."""
    from harness import Harness
    h = Harness(stack)
    svc = setup_service(h)
    rec = wait_status(h, deploy(h, svc, "1.0.0"), "succeeded", timeout=90)
    slow = setup_service(h, versions=("bad-1",), timeout="2s")
    late = wait_status(h, deploy(h, slow, "bad-1"), "failed", timeout=90)
    assert late["error"].startswith("timed out"), late
    h.produce("requests", f"prod/{svc}", b"not json at all")
    h.wait_for(lambda: query(h, 'relfleet_messages_dead_lettered_total{stage="render"}'), 60,
               "Prometheus to scrape the dead letter")
    h.wait_for(lambda: query(h, 'relfleet_releases_finished_total{status="succeeded"}'), 60,
               "Prometheus to scrape the finished release")
    return h, rec


def test_the_stack_loads_the_rules_and_a_dead_letter_fires_its_alert(after_a_release):
    h, _rec = after_a_release
    groups = prometheus_api(h, "rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert len(rules) == 7 and all(r["health"] == "ok" for r in rules.values()), rules

    def firing():
        alerts = prometheus_api(h, "alerts")["alerts"]
        # other modules on this stack may have dead-lettered messages elsewhere too
        return [a for a in alerts if a["labels"]["alertname"] == "RelfleetMessagesDeadLettered"
                and a["state"] == "firing" and a["labels"]["stage"] == "render"
                and a["labels"]["reason"] == "invalid"
                and a["labels"]["topic"] == h.topic("requests")]
    h.wait_for(firing, 30, "RelfleetMessagesDeadLettered to fire for render's invalid message")
    # The timed-out release: track counted it, and its alert fires too.
    h.wait_for(lambda: [a for a in prometheus_api(h, "alerts")["alerts"]
                        if a["labels"]["alertname"] == "RelfleetReleasesTimedOut"
                        and a["state"] == "firing" and a["labels"]["stage"] == "track"],
               30, "RelfleetReleasesTimedOut to fire")
    # Lock renewals are counted by outcome (apply renews the lock of every release it takes).
    renewed = query(h, 'sum(relfleet_lock_renewals_total{outcome="renewed"})')
    assert renewed and float(renewed[0]["value"][1]) >= 2, renewed
    # A healthy stack has every stage ready: that alert stays quiet.
    assert not [a for a in prometheus_api(h, "alerts")["alerts"]
                if a["labels"]["alertname"] == "RelfleetStageNoReadyWorker"]


def prometheus_api(h, what):
    import urllib.request
    with urllib.request.urlopen(f"{h.env['RELFLEET_PROMETHEUS_URL']}/api/v1/{what}",
                                timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARS.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def test_every_dashboard_query_parses_and_returns_series(after_a_release):
    h, _rec = after_a_release
    queries = dashboard_queries()
    titles = {title for title, _ in queries}
    for want in ("Throughput per stage", "Consumer lag per stage", "Processing time p99 per stage",
                 "Releases by outcome", "Dead letters"):
        assert want in titles, titles
    assert not [q for _, q in queries if "$" in q], "a Grafana variable left unreplaced"
    empty = []

    def all_answer():
        empty[:] = [(title, q) for title, q in queries if not query(h, q)]
        return not empty
    # The rates need two scrapes inside their window after the release: at most a few seconds.
    try:
        h.wait_for(all_answer, 30, "every dashboard query to return series", interval=1)
    except AssertionError:
        raise AssertionError(f"queries without series: {empty}") from None
    outcomes = {r["metric"]["status"] for r in query(
        h, "sum by (status) (increase(relfleet_releases_finished_total[1h]))")}
    assert "succeeded" in outcomes, outcomes
    stages = {r["metric"]["stage"] for r in query(
        h, dict(queries)["Throughput per stage"])}
    assert {"render", "apply", "track"} <= stages, stages  # the stages the release went through
