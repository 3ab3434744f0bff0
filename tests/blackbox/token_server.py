"""A Docker Registry token server of the tests' own (the Docker token authentication spec:
GET realm?service=S&scope=repository:NAME:ACTIONS with Basic credentials answers
{"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": T}), on loopback.

The JWTs are RS256, signed with a key pair made here; the self-signed certificate goes in
the registry's auth.token.rootcertbundle and each token carries it in its x5c header, which
is how docker-registry 2.8 finds the signing key. Needs python3-cryptography."""
import base64
import datetime
import http.server
import json
import secrets
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """users: {name: password}. grants(user, repository, actions) -> the actions granted
    (user is None when anonymous); by default a known user gets what it asks for.
    refuse(user, scope) -> an HTTP status to answer instead of a token, or None.
    Every request is kept in .requests as {"user", "password", "query"}."""

    def __init__(self, cert_path, service, issuer, users, grants=None, refuse=None):
        self.service, self.issuer, self.users = service, issuer, dict(users)
        self.grants = grants or (lambda user, repo, actions: actions if user else [])
        self.refuse = refuse or (lambda user, scope: None)
        self.requests = []
        self._lock = threading.Lock()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        with open(cert_path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))
        self.cert_path = cert_path
        self.httpd = self.realm = None

    def __enter__(self):
        """Serves on a free loopback port (self.realm) until the with block ends."""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer._answer(self)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def token(self, user, access, ttl=300):
        """A signed JWT for user (sub) with access [{"type","name","actions"}]."""
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + ttl, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(16),
                  "access": access}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(sig)

    def _answer(self, req):
        url = urllib.parse.urlsplit(req.path)
        query = urllib.parse.parse_qs(url.query)
        user = password = None
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                user = password = None
        with self._lock:
            self.requests.append({"user": user, "password": password, "query": query,
                                  "authorization": auth})

        def reply(status, doc, extra=()):
            body = json.dumps(doc).encode()
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(body)

        if url.path != "/token":
            return reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
        if query.get("service") != [self.service]:
            return reply(400, {"errors": [{"code": "UNSUPPORTED",
                                           "message": f"unknown service {query.get('service')}"}]})
        if user is not None and self.users.get(user) != password:
            return reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                           "message": "authentication required"}]},
                         [("WWW-Authenticate", 'Basic realm="token"')])
        access = []
        for scope in query.get("scope", []):
            status = self.refuse(user, scope)
            if status:
                return reply(status, {"errors": [{"code": "DENIED",
                                                  "message": f"access to {scope} denied"}]})
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind != "repository" or not repo:
                continue
            granted = [a for a in self.grants(user, repo, actions.split(","))]
            if granted:
                access.append({"type": "repository", "name": repo, "actions": granted})
        token = self.token(user, access)
        reply(200, {"token": token, "access_token": token, "expires_in": 300,
                    "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})
