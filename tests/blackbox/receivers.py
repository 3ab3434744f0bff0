"""Local receivers of notifications: a real SMTP server (aiosmtpd) and an HTTP server that
checks DingTalk and webhook signatures with independent code (Python's hmac)."""
import base64
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import urllib.parse

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd on loopback. With login/password, AUTH is required and checked; every
    accepted message is kept as (envelope sender, recipients, raw bytes, login)."""

    def __init__(self, login=None, password=None):
        self.login, self.password = login, password
        self.messages = []
        self.auth_attempts = []
        self.lock = threading.Lock()
        self.port = free_port()
        kwargs = {}
        if login:
            kwargs = dict(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=False)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
        password = (auth_data.password.decode() if isinstance(auth_data.password, bytes)
                    else auth_data.password)
        ok = login == self.login and password == self.password
        with self.lock:
            self.auth_attempts.append((mechanism, login, ok))
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append({
                "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                "data": envelope.original_content or envelope.content,
                "login": getattr(session, "login_data", None), "at": time.monotonic(),
            })
        return "250 OK"

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def snapshot(self):
        with self.lock:
            return list(self.messages)


def dingtalk_sign(secret, timestamp):
    """DingTalk's documented signature, as its Python sample computes it."""
    string_to_sign = f"{timestamp}\n{secret}".encode("utf-8")
    code = hmac.new(secret.encode("utf-8"), string_to_sign, digestmod=hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(code))


def webhook_signature(key, timestamp, body):
    """The documented webhook signature (docs/notifications.md), computed independently."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return "sha256=" + mac


class HttpReceiver:
    """One HTTP server for DingTalk robots (/robot/NAME/send?access_token=NAME) and webhooks
    (/hook/NAME). Each NAME has a secret (or none) and a script of answers consumed one per
    request, then "ok": "ok", "130101", "310000", "500", "stall" (hold the request until
    release() or 60 s)."""

    def __init__(self):
        self.secrets = {}
        self.scripts = {}
        self.requests = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                receiver._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self):
        self.released.set()

    def robot(self, name, secret=None, script=()):
        self.secrets[name] = secret
        self.scripts[name] = list(script)
        return f"http://127.0.0.1:{self.port}/robot/{name}/send?access_token={name}"

    def hook(self, name, key=None, script=()):
        self.secrets[name] = key
        self.scripts[name] = list(script)
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def of(self, name):
        with self.lock:
            return [r for r in self.requests if r["name"] == name]

    def _next_action(self, name):
        with self.lock:
            script = self.scripts.get(name) or []
            return script.pop(0) if script else "ok"

    def _verify_dingtalk(self, name, query, raw_query):
        secret = self.secrets.get(name)
        if secret is None:
            return "timestamp" not in query and "sign" not in query
        ts = query.get("timestamp", [""])[0]
        sign = query.get("sign", [""])[0]
        if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600 * 1000:
            return False
        # The sign as sent (URL-encoded) equals the documented computation byte for byte, and
        # decodes to the base64 of the HMAC.
        raw_sign = dict(p.split("=", 1) for p in raw_query.split("&") if "=" in p).get("sign")
        expected = dingtalk_sign(secret, ts)
        return raw_sign == expected and sign == urllib.parse.unquote_plus(expected)

    def _handle(self, req):
        parsed = urllib.parse.urlsplit(req.path)
        parts = parsed.path.strip("/").split("/")
        body = req.rfile.read(int(req.headers.get("Content-Length", 0)))
        kind = parts[0] if parts else ""
        name = parts[1] if len(parts) > 1 else ""
        query = urllib.parse.parse_qs(parsed.query)
        if kind == "robot":
            verified = self._verify_dingtalk(name, query, parsed.query)
        else:
            key = self.secrets.get(name)
            ts = req.headers.get("X-Relfleet-Timestamp", "")
            sig = req.headers.get("X-Relfleet-Signature")
            verified = (sig is None if key is None else
                        sig is not None and ts.isdigit() and abs(int(ts) - time.time()) < 300
                        and hmac.compare_digest(sig, webhook_signature(key, ts, body)))
        action = self._next_action(name)
        record = {"kind": kind, "name": name, "path": req.path, "headers": dict(req.headers),
                  "body": body, "verified": verified, "action": action,
                  "at": time.monotonic()}
        with self.lock:
            self.requests.append(record)
        if action == "stall":
            self.released.wait(60)
        status, answer = 200, {"errcode": 0, "errmsg": "ok"}
        if kind == "robot" and not verified:
            answer = {"errcode": 310000, "errmsg": "sign not match"}
        elif action == "130101":
            answer = {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        elif action == "310000":
            answer = {"errcode": 310000, "errmsg": "keywords not in content"}
        elif action == "500":
            status, answer = 500, {"error": "internal"}
        elif kind == "hook" and not verified:
            status, answer = 401, {"error": "bad signature"}
        data = json.dumps(answer).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except OSError:
            pass  # the sender gave up on a stalled request


def make_tls_certs(folder, name, ca=None, host="127.0.0.1"):
    """Makes with the openssl CLI a CA (when ca is None) and a server certificate for host
    (IP and DNS subjectAltName) signed by it; returns {"ca", "ca_key", "cert", "key"} paths.
    Pass the returned dict as ca to sign a second server certificate with the same CA."""
    import ipaddress
    import subprocess
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if ca is None:
        ca = {"ca": folder / f"{name}-ca.pem", "ca_key": folder / f"{name}-ca.key"}
        openssl("req", "-x509", *ec, "-keyout", str(ca["ca_key"]), "-out", str(ca["ca"]),
                "-days", "2", "-subj", f"/CN=relfleet test CA {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    cert, key, csr = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr")
    ext = folder / f"{name}.ext"
    try:
        ipaddress.ip_address(host)
        san = f"IP:{host}"
    except ValueError:
        san = f"DNS:{host}"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
                   "basicConstraints=critical,CA:FALSE\n")
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca["ca"]), "-CAkey", str(ca["ca_key"]),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return {"ca": ca["ca"], "ca_key": ca["ca_key"], "cert": cert, "key": key}


class TlsSmtpReceiver(SmtpReceiver):
    """aiosmtpd with TLS, recording every line the client sent and whether it came over TLS
    (`wire`: dicts conn, tls, line). mode:
    - "starttls": offers STARTTLS (require_starttls=True: nothing but EHLO/HELO/NOOP/QUIT
      before it) and AUTH only after it (auth_require_tls=True);
    - "plain": no STARTTLS, AUTH offered in clear (a server a client must not trust);
    - "implicit": TLS on the listening socket (smtps://).
    Accepted messages carry "tls" (the TLS version, or None)."""

    def __init__(self, mode, cert, key, login=None, password=None):
        import ssl

        from aiosmtpd.smtp import SMTP

        self.login, self.password, self.mode = login, password, mode
        self.messages, self.auth_attempts, self.wire = [], [], []
        self.lock = threading.Lock()
        self.port = free_port()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        kwargs = {}
        if login:
            kwargs = dict(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=mode == "starttls")
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif mode == "implicit":
            kwargs.update(ssl_context=context)
        elif mode != "plain":
            raise ValueError(f"unknown mode {mode!r}")
        receiver = self

        class RecordingSMTP(SMTP):
            def data_received(self, data):
                receiver._record(id(self), _tls_version(self.transport), data)
                super().data_received(data)

        class RecordingController(Controller):
            def factory(self):
                return RecordingSMTP(self.handler, **self.SMTP_kwargs)

        self.controller = RecordingController(self, hostname="127.0.0.1", port=self.port,
                                              **kwargs)

    @property
    def url(self):
        return f"{'smtps' if self.mode == 'implicit' else 'smtp'}://127.0.0.1:{self.port}"

    def _record(self, conn, tls, data):
        with self.lock:
            for line in data.splitlines():
                self.wire.append({"conn": conn, "tls": tls, "line": line})

    async def handle_DATA(self, server, session, envelope):
        status = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.messages[-1]["tls"] = _tls_version(server.transport)
        return status

    def commands(self, tls):
        """The SMTP verbs the client sent in clear (tls=False) or over TLS (tls=True)."""
        with self.lock:
            return [w["line"].split(b" ", 1)[0].split(b":", 1)[0].upper().decode("latin-1")
                    for w in self.wire if bool(w["tls"]) == tls]


def _tls_version(transport):
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    return ssl_object.version() if ssl_object else None
