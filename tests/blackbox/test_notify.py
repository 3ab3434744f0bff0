"""Notifications: email through a real SMTP server, DingTalk and webhooks through a local
receiver that checks signatures; retries, permanent failures, a stalled receiver, restarts."""
import email
import email.policy
import json
import urllib.parse

import pytest

from harness import Harness, Stack
from metrics_exporter import prometheus_query
from receivers import HttpReceiver, SmtpReceiver
from releases import TERMINAL, deploy, record, setup_service, wait_status

SMTP_LOGIN = "relfleet-mailer"
SECRETS = {"smtp_pw": "pw-5mtp-Ziegel-771", "dt_key": "SECd1ngta1k0f7e3b9", "hook_key": "wh-k3y-Q9x"}
TIMEOUT_MS = 3000
BACKOFF_MS = 300
MAX_ATTEMPTS = 3
RATE = 3


@pytest.fixture(scope="module")
def ctx():
    smtp = SmtpReceiver(login=SMTP_LOGIN, password=SECRETS["smtp_pw"]).start()
    http = HttpReceiver().start()
    extra = {
        "RELFLEET_SMTP_URL": smtp.url,
        "RELFLEET_SMTP_FROM": "Relfleet <relfleet@example.test>",
        "RELFLEET_SMTP_USER": SMTP_LOGIN,
        "RELFLEET_NOTIFY_TIMEOUT_MS": str(TIMEOUT_MS),
        "RELFLEET_NOTIFY_BACKOFF_MS": str(BACKOFF_MS),
        "RELFLEET_NOTIFY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "RELFLEET_DINGTALK_RATE_PER_MIN": str(RATE),
    }
    extra.update({"RELFLEET_SECRET_" + k.upper(): v for k, v in SECRETS.items()})
    stack = Stack(extra_env=extra)
    try:
        stack.up()
        yield {"h": Harness(stack), "smtp": smtp, "http": http, "stack": stack}
    finally:
        http.stop()
        smtp.stop()
        stack.down()
        stack.remove()


def subscribe(h, svc, channel, target, *extra, env="prod"):
    h.relctl("notify", "add", svc, "--env", env, "--channel", channel, "--target", target, *extra)


def rejected(h, svc):
    """A release of a version the service does not have: rejected at once, with a result."""
    rid = deploy(h, svc, "no-such-version")
    wait_status(h, rid, "rejected", timeout=30)
    return rid


def notifications(h, rid):
    return {(n["channel"], n["target"]): n for n in record(h, rid)["notifications"]}


def wait_notified(h, rid, count, timeout=30):
    """Waits until the release has count notifications, none pending or sending."""
    def done():
        ns = record(h, rid)["notifications"]
        return len(ns) == count and all(n["state"] in ("sent", "failed") for n in ns) and ns
    return h.wait_for(done, timeout, f"{count} notifications of {rid} to end")


def mails_of(smtp, rid):
    out = []
    for m in smtp.snapshot():
        msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        if msg["X-Relfleet-Event-Id"] == rid:
            out.append((m, msg))
    return out


def test_email_and_dingtalk_on_success_and_failure(ctx):
    h, smtp, http = ctx["h"], ctx["smtp"], ctx["http"]
    svc = setup_service(h, versions=("1.0.0", "fail-1"))
    robot = http.robot("team-" + svc[-6:], secret=SECRETS["dt_key"])
    subscribe(h, svc, "email", "oncall@example.test, lead@example.test", "--secret", "smtp_pw")
    subscribe(h, svc, "dingtalk", robot, "--secret", "dt_key", "--on", "failed")
    desc = "支付服务：修复回调重复扣款（第二版）"
    good = deploy(h, svc, "1.0.0", "prod", "-m", desc)
    assert wait_status(h, good, TERMINAL, timeout=60)["status"] == "succeeded"
    bad = deploy(h, svc, "fail-1", "prod", "-m", "灰度前验证")
    rec_bad = wait_status(h, bad, TERMINAL, timeout=120)
    assert rec_bad["status"] == "failed"

    wait_notified(h, good, 1)
    wait_notified(h, bad, 2)
    [(env_good, mail_good)] = mails_of(smtp, good)
    [(env_bad, mail_bad)] = mails_of(smtp, bad)

    # A proper message: decoded subject, the headers, the envelope, AUTH with the secret.
    subject = str(mail_good["Subject"])
    assert desc in subject and svc in subject and "succeeded" in subject, subject
    assert "=?UTF-8?B?" in env_good["data"].decode("ascii"), "subject not RFC 2047 encoded"
    assert mail_good["From"].addresses[0].addr_spec == "relfleet@example.test"
    assert [a.addr_spec for a in mail_good["To"].addresses] == ["oncall@example.test",
                                                                "lead@example.test"]
    assert sorted(env_good["to"]) == ["lead@example.test", "oncall@example.test"]
    assert env_good["from"] == "relfleet@example.test"
    assert mail_good["Date"].datetime is not None
    assert mail_good["Message-ID"].startswith("<" + good) and mail_good["Message-ID"] != \
        mail_bad["Message-ID"]
    assert any(ok and login == SMTP_LOGIN for _, login, ok in smtp.auth_attempts)
    body = mail_good.get_content()
    for field in (f"Service:     {svc}", "Env:         prod", "Version:     1.0.0",
                  f"Operator:    {record(h, good)['operator']}", f"Description: {desc}",
                  "Status:      succeeded", "Duration:", f"relctl show {good}"):
        assert field in body, (field, body)

    # The failure: reason, failing pods, their log excerpt.
    assert "failed" in str(mail_bad["Subject"]) and "灰度前验证" in str(mail_bad["Subject"])
    body = mail_bad.get_content()
    assert "exceeded its progress deadline" in body, body
    pod = rec_bad["pods"][0]["name"]
    assert pod in body and "CrashLoopBackOff" in body, body
    assert "cannot connect to database" in body, body
    assert f"relctl show {bad}" in body

    # DingTalk: only the failure (--on failed), signed as DingTalk documents it.
    reqs = http.of(robot.split("/")[4])
    assert len(reqs) == 1, reqs
    assert reqs[0]["verified"], reqs[0]["path"]
    msg = json.loads(reqs[0]["body"])
    assert msg["msgtype"] == "markdown"
    assert svc in msg["markdown"]["title"] and "failed" in msg["markdown"]["title"]
    assert "cannot connect to database" in msg["markdown"]["text"]
    assert bad in msg["markdown"]["text"]

    shown = notifications(h, bad)
    assert shown[("dingtalk", robot)]["state"] == "sent"
    assert shown[("dingtalk", robot)]["attempts"] == 1 and shown[("dingtalk", robot)]["sent_at"]
    assert [n["channel"] for n in record(h, good)["notifications"]] == ["email"]
    text = h.relctl("show", bad).stdout
    assert "notifications" in text and "dingtalk" in text and "sent" in text, text


def test_webhook_body_is_the_result_signed_with_event_id(ctx):
    h, http = ctx["h"], ctx["http"]
    svc = setup_service(h)
    good_hook = http.hook("good-" + svc[-6:], key=SECRETS["hook_key"])
    # A receiver that expects another key: the signature check must fail there.
    wrong_hook = http.hook("wrong-" + svc[-6:], key="not-the-key")
    subscribe(h, svc, "webhook", good_hook, "--secret", "hook_key")
    subscribe(h, svc, "webhook", wrong_hook, "--secret", "hook_key")
    rid = rejected(h, svc)
    wait_notified(h, rid, 2)

    [req] = http.of("good-" + svc[-6:])
    assert req["verified"]
    assert req["headers"]["X-Relfleet-Event-Id"] == rid
    assert req["headers"]["Idempotency-Key"] == rid
    published = h.consume("results", timeout=30, until=lambda ms: any(
        m.json()["release_id"] == rid for m in ms))
    [result] = [m for m in published if m.json()["release_id"] == rid]
    assert req["body"] == result.value  # the bytes on `results`, signed as they are
    assert json.loads(req["body"])["status"] == "rejected"

    [bad_req] = http.of("wrong-" + svc[-6:])
    assert not bad_req["verified"]
    shown = notifications(h, rid)
    assert shown[("webhook", good_hook)]["state"] == "sent"
    wrong = shown[("webhook", wrong_hook)]
    assert wrong["state"] == "failed" and wrong["attempts"] == 1, wrong
    assert "HTTP 401" in wrong["last_error"], wrong


def test_dingtalk_throttle_retried_refusals_permanent_errors_limited(ctx):
    h, http = ctx["h"], ctx["http"]
    svc = setup_service(h)
    tag = svc[-6:]
    throttled = http.robot("thr-" + tag, secret=SECRETS["dt_key"], script=["130101"])
    keyword = http.robot("kw-" + tag, secret=SECRETS["dt_key"], script=["310000"])
    badsign = http.robot("sig-" + tag, secret="SECsomething-else")
    broken = http.robot("err-" + tag, secret=SECRETS["dt_key"], script=["500"] * 5)
    for robot in (throttled, keyword, badsign, broken):
        subscribe(h, svc, "dingtalk", robot, "--secret", "dt_key")
    rid = rejected(h, svc)
    wait_notified(h, rid, 4, timeout=60)
    shown = notifications(h, rid)

    t = shown[("dingtalk", throttled)]
    assert t["state"] == "sent" and t["attempts"] == 2, t
    reqs = http.of("thr-" + tag)
    assert [r["action"] for r in reqs] == ["130101", "ok"] and all(r["verified"] for r in reqs)
    assert reqs[1]["at"] - reqs[0]["at"] >= BACKOFF_MS / 2000, "retried without back-off"
    # Each request signed afresh.
    assert reqs[0]["path"] != reqs[1]["path"]

    k = shown[("dingtalk", keyword)]
    assert k["state"] == "failed" and k["attempts"] == 1, k
    assert "310000" in k["last_error"] and "keywords not in content" in k["last_error"], k
    s = shown[("dingtalk", badsign)]
    assert s["state"] == "failed" and s["attempts"] == 1 and "sign not match" in s["last_error"]

    b = shown[("dingtalk", broken)]
    assert b["state"] == "failed" and b["attempts"] == MAX_ATTEMPTS, b
    assert "HTTP 500" in b["last_error"] and f"gave up after {MAX_ATTEMPTS}" in b["last_error"]
    assert len(http.of("err-" + tag)) == MAX_ATTEMPTS

    # notify counts each attempt's result, as the stack's Prometheus scrapes it: three failed
    # for good, three retried (one throttled, two of the broken robot's), one sent at least.
    def counted():
        rows = prometheus_query(h.env["RELFLEET_PROMETHEUS_URL"], 'sum by (result) '
                                '(relfleet_notifications_total{channel="dingtalk"})')
        got = {r["metric"]["result"]: float(r["value"][1]) for r in rows}
        return got.get("failed", 0) >= 3 and got.get("retried", 0) >= 3 and \
            got.get("sent", 0) >= 1 and got
    h.wait_for(counted, 30, "Prometheus to see the notifications counted by result")


def test_dingtalk_robot_never_gets_more_than_its_rate(ctx):
    h, http = ctx["h"], ctx["http"]
    svc = setup_service(h)
    name = "rate-" + svc[-6:]
    robot = http.robot(name, secret=SECRETS["dt_key"])
    subscribe(h, svc, "dingtalk", robot, "--secret", "dt_key")
    ids = [rejected(h, svc) for _ in range(RATE + 2)]
    h.wait_for(lambda: len(http.of(name)) >= RATE, 30, f"{RATE} messages to the robot")
    # The rest wait for the minute to pass: pending, no attempt spent, due a minute after
    # the first send.
    def held():
        # (a result may not be consumed yet: its notification is then missing)
        states = [notifications(h, rid).get(("dingtalk", robot)) for rid in ids]
        waiting = [s for s in states if s and s["state"] == "pending" and s["attempts"] == 0
                   and s["next_attempt_at"]]
        return len(waiting) == 2 and waiting
    waiting = h.wait_for(held, 30, "two notifications held back by the rate limit")
    first = h.psql(f"SELECT min(at) FROM notify_rate WHERE robot = '{robot}'")[0][0]
    rows = h.psql("SELECT extract(epoch FROM (min(n.next_attempt_at) - "
                  f"'{first}'::timestamptz)) FROM notifications n WHERE n.target = '{robot}'"
                  " AND n.state = 'pending'")
    assert float(rows[0][0]) >= 59.9, rows
    assert len(http.of(name)) == RATE
    assert len(waiting) == 2


def test_stalled_receiver_delays_nobody(ctx):
    h, http, smtp = ctx["h"], ctx["http"], ctx["smtp"]
    svc = setup_service(h)
    other = setup_service(h)
    tag = svc[-6:]
    stalled = http.hook("stall-" + tag, script=["stall"])
    fast = http.hook("fast-" + tag)
    fast_other = http.hook("other-" + tag)
    subscribe(h, svc, "webhook", stalled)
    subscribe(h, svc, "webhook", fast)
    subscribe(h, svc, "email", "team@example.test", "--secret", "smtp_pw")
    subscribe(h, other, "webhook", fast_other)
    rid = rejected(h, svc)
    rid_other = rejected(h, other)
    h.wait_for(lambda: http.of("stall-" + tag), 20, "the stalled request to arrive")
    stall_at = http.of("stall-" + tag)[0]["at"]
    h.wait_for(lambda: http.of("fast-" + tag) and http.of("other-" + tag) and mails_of(smtp, rid),
               20, "the other receivers")
    # Delivered while the stalled request was still held: one delivery after another would
    # have put them after its timeout (TIMEOUT_MS). Not half of it: the other service's
    # result took over a second to come through a loaded CI machine.
    held_until = stall_at + TIMEOUT_MS / 1000
    assert http.of("fast-" + tag)[0]["at"] < held_until
    assert http.of("other-" + tag)[0]["at"] < held_until
    assert mails_of(smtp, rid)[0][0]["at"] < held_until
    # The stalled one times out and is retried.
    wait_notified(h, rid, 3, timeout=30)
    s = notifications(h, rid)[("webhook", stalled)]
    assert s["state"] == "sent" and s["attempts"] == 2, s
    assert [r["action"] for r in http.of("stall-" + tag)] == ["stall", "ok"]
    wait_notified(h, rid_other, 1)


def test_restart_and_redelivery_lose_nothing_send_nothing_twice(ctx):
    h, http, stack = ctx["h"], ctx["http"], ctx["stack"]
    svc = setup_service(h)
    tag = svc[-6:]
    held = http.hook("held-" + tag, script=["stall"])
    steady = http.hook("steady-" + tag)
    subscribe(h, svc, "webhook", held)
    subscribe(h, svc, "webhook", steady)
    first = rejected(h, svc)
    h.wait_for(lambda: http.of("held-" + tag) and http.of("steady-" + tag), 20,
               "the first deliveries")
    # Killed inside the send window of `held` (its request is in flight).
    stack.run("worker", "kill", "notify")
    later = [rejected(h, svc) for _ in range(2)]  # results wait in Kafka meanwhile
    stack.run("worker", "start", "notify")
    for rid in later:
        wait_notified(h, rid, 2, timeout=30)
    wait_notified(h, first, 2, timeout=60)  # after the dead worker's lease lapses

    def events(name):
        return [r["headers"]["X-Relfleet-Event-Id"] for r in http.of(name)]
    assert sorted(events("steady-" + tag)) == sorted([first] + later)
    # Only the send cut by the crash repeats, with the same event id.
    assert sorted(events("held-" + tag)) == sorted([first, first] + later)
    assert notifications(h, first)[("webhook", held)]["attempts"] == 2

    # A redelivered result (byte-identical copy on `results`) sends nothing again. A fresh
    # result on the same key comes after it on the partition: once that one is delivered,
    # the copy was handled.
    msgs = h.consume("results", timeout=30, until=lambda ms: any(
        m.json()["release_id"] == later[0] for m in ms))
    copy = [m for m in msgs if m.json()["release_id"] == later[0]][0]
    h.produce("results", copy.key, copy.value)
    marker = rejected(h, svc)
    wait_notified(h, marker, 2)
    assert sorted(events("steady-" + tag)) == sorted([first] + later + [marker])
    assert events("held-" + tag).count(later[0]) == 1


def test_relctl_notify_add_list_remove(ctx):
    h = ctx["h"]
    svc = setup_service(h)

    def code(*args):
        return h.relctl("notify", *args, check=False).returncode
    assert code("add", svc, "--env", "prod", "--channel", "sms", "--target", "x") == 2
    assert code("add", svc, "--env", "prod", "--channel", "email", "--target", "not-mail") == 2
    assert code("add", svc, "--env", "prod", "--channel", "webhook", "--target",
                "ftp://x/y") == 2
    assert code("add", svc, "--env", "prod", "--channel", "email", "--target", "a@b.test",
                "--on", "succeeded,exploded") == 2
    assert code("add", svc, "--env", "prod", "--channel", "email", "--target", "a@b.test",
                "--secret", "pa ss word") == 2
    assert code("add", "no-such-svc", "--env", "prod", "--channel", "email", "--target",
                "a@b.test") == 1
    subscribe(h, svc, "email", "a@b.test", "--on", "failed")
    subscribe(h, svc, "email", "a@b.test", "--on", "failed,rejected", "--secret", "smtp_pw")
    [sub] = h.relctl_json("notify", "list", svc, "--env", "prod")
    assert sub["on"] == "failed,rejected" and sub["secret"] == "smtp_pw"
    assert sub["channel"] == "email" and sub["target"] == "a@b.test"
    h.relctl("notify", "remove", svc, "--env", "prod", "--channel", "email", "--target",
             "a@b.test")
    assert h.relctl_json("notify", "list", svc) == []
    assert code("remove", str(sub["id"])) == 1


def test_webhook_in_cloudevents_format(ctx):
    # --format cloudevents: the CloudEvents HTTP binding in binary mode (ce-* headers) beside
    # the same signed body and headers as a plain webhook.
    h, http = ctx["h"], ctx["http"]
    svc = setup_service(h)
    name = "ce-" + svc[-6:]
    hook = http.hook(name, key=SECRETS["hook_key"])
    subscribe(h, svc, "webhook", hook, "--secret", "hook_key", "--format", "cloudevents")
    [sub] = h.relctl_json("notify", "list", svc, "--env", "prod")
    assert sub["format"] == "cloudevents", sub
    assert "as cloudevents" in h.relctl("notify", "list", svc, "--env", "prod").stdout
    rid = rejected(h, svc)
    wait_notified(h, rid, 1)
    [req] = http.of(name)
    assert req["verified"]
    body = json.loads(req["body"])
    source = "/relfleet/" + (h.prefix.rstrip("._-") or "relfleet")
    assert {k: v for k, v in req["headers"].items() if k.lower().startswith("ce-")} == {
        "ce-specversion": "1.0", "ce-id": rid, "ce-source": source,
        "ce-type": "io.relfleet.release.rejected", "ce-time": body["finished_at"],
        "ce-subject": f"{svc}/prod"}, req["headers"]
    assert req["headers"]["X-Relfleet-Event-Id"] == rid
    assert req["headers"]["Content-Type"].startswith("application/json")
    for args, what in ((["--channel", "email", "--target", "a@example.test"], "webhooks only"),
                       (["--channel", "webhook", "--target", hook, "--format", "xml"],
                        "unknown format 'xml'")):
        extra = ["--format", "cloudevents"] if "--format" not in args else []
        proc = h.relctl("notify", "add", svc, "--env", "prod", *args, *extra, check=False)
        assert proc.returncode == 2 and what in proc.stderr, proc.stderr


def test_secrets_never_in_rows_or_logs(ctx):
    h, stack = ctx["h"], ctx["stack"]
    dump = "\n".join(",".join(r) for r in h.psql(
        "SELECT row_to_json(s)::text FROM notify_subscriptions s UNION ALL"
        " SELECT row_to_json(n)::text FROM notifications n UNION ALL"
        " SELECT row_to_json(t)::text FROM timeline t"))
    assert "smtp_pw" in dump  # the names are there ...
    logs = "".join(p.read_text(errors="replace")
                   for p in (stack.state_dir / "logs").glob("*.log"))
    assert "notification sent" in logs
    for value in SECRETS.values():  # ... the values nowhere
        assert value not in dump
        assert value not in logs
        assert urllib.parse.quote_plus(value) not in logs
