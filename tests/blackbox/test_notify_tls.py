"""Email over TLS with the server's certificate verified against a CA the test makes with the
openssl CLI (setting smtp_ca_file): STARTTLS required (AUTH only after it), a server that
offers no STARTTLS, smtps://, and certificates the configured CA did not sign."""
import base64
import email
import email.policy

import pytest

from harness import Harness
from receivers import TlsSmtpReceiver, make_tls_certs
from releases import deploy, record, setup_service, wait_status

LOGIN = "relfleet-mailer"
PASSWORD = "pw-tls-Ziegel-904"
TARGET = "oncall@example.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    good = make_tls_certs(folder, "trusted")
    rogue = make_tls_certs(folder, "rogue")  # same host, another CA
    return {"ca": str(good["ca"]), "good": good, "rogue": rogue}


@pytest.fixture
def receivers():
    started = []

    def start(mode, certs):
        r = TlsSmtpReceiver(mode, certs["cert"], certs["key"], login=LOGIN,
                            password=PASSWORD).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def notify_once(stack_factory, smtp, starttls, ca_file):
    """A stack whose notify workers use smtp, one email subscription, one (rejected) release;
    returns (release id, its email notification once sent or failed)."""
    env = {
        "RELFLEET_SMTP_URL": smtp.url,
        "RELFLEET_SMTP_FROM": "Relfleet <relfleet@example.test>",
        "RELFLEET_SMTP_USER": LOGIN,
        "RELFLEET_SECRET_SMTP_PW": PASSWORD,
        "RELFLEET_NOTIFY_TIMEOUT_MS": "3000",
        "RELFLEET_NOTIFY_BACKOFF_MS": "200",
        "RELFLEET_NOTIFY_MAX_ATTEMPTS": "3",
    }
    if starttls:
        env["RELFLEET_SMTP_STARTTLS"] = starttls
    if ca_file:
        env["RELFLEET_SMTP_CA_FILE"] = ca_file
    h = Harness(stack_factory.start(extra_env=env))
    svc = setup_service(h)
    h.relctl("notify", "add", svc, "--env", "prod", "--channel", "email", "--target", TARGET,
             "--secret", "smtp_pw")
    rid = deploy(h, svc, "no-such-version")
    wait_status(h, rid, "rejected", timeout=30)

    def ended():
        ns = record(h, rid)["notifications"]
        return len(ns) == 1 and ns[0]["state"] in ("sent", "failed") and ns[0]
    return rid, h.wait_for(ended, 45, f"the email notification of {rid} to end")


def mail_of(smtp, rid):
    [m] = smtp.snapshot()
    msg = email.message_from_bytes(m["data"], policy=email.policy.default)
    assert msg["X-Relfleet-Event-Id"] == rid
    assert m["to"] == [TARGET]
    return m, msg


def plain_auth_blob():
    """The AUTH PLAIN credentials as they would travel (base64 of \\0login\\0password)."""
    return base64.b64encode(f"\0{LOGIN}\0{PASSWORD}".encode())


def test_starttls_required_delivers_and_authenticates_only_over_tls(stack_factory, receivers,
                                                                    pki):
    smtp = receivers("starttls", pki["good"])
    rid, n = notify_once(stack_factory, smtp, "required", pki["ca"])
    assert n["state"] == "sent" and n["attempts"] == 1, n
    m, msg = mail_of(smtp, rid)
    assert m["tls"], m
    assert "rejected" in str(msg["Subject"]), msg["Subject"]  # the message came over TLS
    assert [(login, ok) for _, login, ok in smtp.auth_attempts] == [(LOGIN, True)]
    # In clear only the greeting and STARTTLS; AUTH and the mail after the handshake.
    assert set(smtp.commands(tls=False)) <= {"EHLO", "STARTTLS"}, smtp.commands(tls=False)
    assert "STARTTLS" in smtp.commands(tls=False)
    tls_cmds = smtp.commands(tls=True)
    for verb in ("EHLO", "AUTH", "MAIL", "RCPT", "DATA"):
        assert verb in tls_cmds, (verb, tls_cmds)
    assert tls_cmds.index("EHLO") < tls_cmds.index("AUTH") < tls_cmds.index("MAIL")
    clear = b"\n".join(w["line"] for w in smtp.wire if not w["tls"])
    assert PASSWORD.encode() not in clear and plain_auth_blob() not in clear


def test_starttls_required_fails_on_a_server_without_starttls(stack_factory, receivers, pki):
    smtp = receivers("plain", pki["good"])
    rid, n = notify_once(stack_factory, smtp, "required", pki["ca"])
    # Permanent (rf_notify.h: "STARTTLS missing"): no retry could make the server offer it.
    assert n["state"] == "failed" and n["attempts"] == 1, n
    assert "STARTTLS" in n["last_error"], n
    # The worker reached the server (it greeted it) and then sent nothing: no AUTH, no mail.
    sent = smtp.commands(tls=False)
    assert "EHLO" in sent, sent
    assert set(sent) <= {"EHLO", "QUIT"}, sent
    assert smtp.commands(tls=True) == []
    assert smtp.snapshot() == [] and smtp.auth_attempts == []


def test_smtps_delivers_over_implicit_tls(stack_factory, receivers, pki):
    smtp = receivers("implicit", pki["good"])
    assert smtp.url.startswith("smtps://")
    # STARTTLS off: smtps:// is TLS from the first byte whatever that setting says.
    rid, n = notify_once(stack_factory, smtp, "off", pki["ca"])
    assert n["state"] == "sent" and n["attempts"] == 1, n
    m, msg = mail_of(smtp, rid)
    assert m["tls"], m
    assert "rejected" in str(msg["Subject"]), msg["Subject"]
    assert [(login, ok) for _, login, ok in smtp.auth_attempts] == [(LOGIN, True)]
    assert smtp.commands(tls=False) == []  # not one byte in clear
    assert {"EHLO", "AUTH", "MAIL", "DATA"} <= set(smtp.commands(tls=True))


@pytest.mark.parametrize("mode,starttls,ca", [
    ("starttls", "required", "configured"),  # signed by another CA than smtp_ca_file
    ("implicit", None, "configured"),
    ("starttls", "required", None),          # no smtp_ca_file: the system store, no test CA
], ids=["starttls-other-ca", "smtps-other-ca", "starttls-system-store"])
def test_certificate_not_signed_by_the_ca_is_refused(stack_factory, receivers, pki, mode,
                                                     starttls, ca):
    certs = pki["rogue"] if ca else pki["good"]
    smtp = receivers(mode, certs)
    rid, n = notify_once(stack_factory, smtp, starttls, pki["ca"] if ca else None)
    assert n["state"] == "failed" and n["attempts"] == 1, n
    assert "certificate" in n["last_error"], n
    # Nothing after the handshake: no AUTH, no mail, not a line over TLS.
    assert smtp.snapshot() == [] and smtp.auth_attempts == []
    assert smtp.commands(tls=True) == []
    assert set(smtp.commands(tls=False)) <= {"EHLO", "STARTTLS"}
