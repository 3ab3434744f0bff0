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
