"""Registry tags through the Bearer token flow (the Docker token authentication spec that
Harbor and Docker Hub use): Debian's docker-registry on loopback with auth.token, and a token
server of the test's own (token_server.py) issuing RS256 JWTs from a key pair made here."""
import secrets

import pytest
import requests

from releases import setup_service
from registry import docker_registry
from test_operations import push_image
from token_server import TokenServer

SERVICE = "relfleet-registry"
ISSUER = "relfleet-test-issuer"


class Bearer(requests.auth.AuthBase):
    def __init__(self, token):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


@pytest.fixture
def token_registry(tmp_path):
    """(registry URL, token server, (user, password)): docker-registry trusting the token
    server's certificate, the token server knowing one user."""
    user, password = "ci", secrets.token_hex(12)
    with TokenServer(tmp_path / "token.crt", SERVICE, ISSUER, {user: password}) as tokens:
        auth = f"""  token:
    realm: {tokens.realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {tokens.cert_path}
"""
        with docker_registry(tmp_path, auth) as url:
            yield url, tokens, (user, password)


def push_with_token(url, tokens, repo, tag):
    """Pushes an image with a pull,push token the test signs itself."""
    token = tokens.token("ci", [{"type": "repository", "name": repo,
                                 "actions": ["pull", "push"]}])
    push_image(url, Bearer(token), repo, tag)


def configure(h, url, svc, repo, cred):
    secret = "registry_" + svc.replace("-", "_") + "_" + secrets.token_hex(3)
    with open(h.env["RELFLEET_SECRETS_FILE"], "a") as f:
        f.write(f"{secret}={cred[0]}:{cred[1]}\n")
    host = url.split("://")[1]
    h.relctl("service", "set", svc, "--env", "prod", f"image_repo={host}/{repo}",
             f"registry={url}", f"registry_secret={secret}")


def test_image_list_reads_tags_with_a_bearer_token(harness, token_registry, tmp_path):
    h = harness
    url, tokens, cred = token_registry
    svc = setup_service(h, versions=("1.0.0", "2.0.0"))
    repo = f"team/{svc}"
    for tag in ("2.0.0", "2.1.0", "3.0.0-rc1"):
        push_with_token(url, tokens, repo, tag)
    # The registry really wants a token: Basic credentials alone get the Bearer challenge.
    r = requests.get(f"{url}/v2/{repo}/tags/list", auth=cred, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith(
        f'Bearer realm="{tokens.realm}"'), (r.status_code, r.headers)
    # ... and a token signed by another key is refused (the certificate bundle is in use).
    forged = TokenServer(tmp_path / "other.crt", SERVICE, ISSUER, {})
    r = requests.get(f"{url}/v2/{repo}/tags/list", timeout=10, auth=Bearer(forged.token(
        "ci", [{"type": "repository", "name": repo, "actions": ["pull"]}])))
    assert r.status_code == 401, r.text

    configure(h, url, svc, repo, cred)
    tokens.requests.clear()
    tags = {t["tag"]: t for t in h.relctl_json("image", "list", svc)}
    assert set(tags) == {"1.0.0", "2.0.0", "2.1.0", "3.0.0-rc1"}, tags
    assert "registry" not in tags["1.0.0"] and tags["1.0.0"]["added_by"]
    assert tags["2.0.0"]["registry"] == url and tags["2.0.0"]["added_at"]
    for t in ("2.1.0", "3.0.0-rc1"):
        assert tags[t]["registry"] == url and tags[t]["added_at"] is None, tags[t]
    # relctl asked the token service, with the user's Basic credentials, for pull on that
    # repository of that service, and only once.
    assert len(tokens.requests) == 1, tokens.requests
    asked = tokens.requests[0]
    assert asked["user"] == cred[0] and asked["password"] == cred[1], asked
    assert asked["query"] == {"service": [SERVICE], "scope": [f"repository:{repo}:pull"]}, asked
    out = h.relctl("image", "list", svc).stdout
    assert "3.0.0-rc1" in out and f"in {url}" in out, out

    # An unknown repository (a token for it is granted): a not-found error naming it.
    h.relctl("service", "set", svc, "--env", "prod", f"image_repo={url.split('://')[1]}/"
             f"team/none-{svc}")
    p = h.relctl("image", "list", svc, check=False)
    assert p.returncode == 1 and f"registry '{url}' has no repository 'team/none-{svc}'" \
        in p.stderr, p


def test_wrong_credentials_for_the_token_service(harness, token_registry):
    h = harness
    url, tokens, cred = token_registry
    svc = setup_service(h, versions=("1.0.0",))
    repo = f"team/{svc}"
    push_with_token(url, tokens, repo, "2.0.0")
    configure(h, url, svc, repo, (cred[0], "wrong-" + secrets.token_hex(4)))
    tokens.requests.clear()
    p = h.relctl("image", "list", svc, check=False)
    assert p.returncode == 1, p
    assert f"registry '{url}'" in p.stderr and "credentials refused" in p.stderr, p.stderr
    assert tokens.realm in p.stderr and "401" in p.stderr, p.stderr
    assert "1.0.0" in p.stdout and "2.0.0" not in p.stdout  # what is recorded is still shown
    assert cred[1] not in p.stderr + p.stdout
    assert [r["user"] for r in tokens.requests] == [cred[0]], tokens.requests


def test_token_service_refusing_the_scope(harness, token_registry):
    h = harness
    url, tokens, cred = token_registry
    svc = setup_service(h, versions=("1.0.0",))
    repo = f"team/{svc}"
    push_with_token(url, tokens, repo, "2.0.0")
    configure(h, url, svc, repo, cred)

    # A token service that says no to the scope (403 denied).
    tokens.refuse = lambda user, scope: 403 if scope == f"repository:{repo}:pull" else None
    p = h.relctl("image", "list", svc, check=False)
    assert p.returncode == 1, p
    assert f"registry '{url}'" in p.stderr and tokens.realm in p.stderr, p.stderr
    assert "403" in p.stderr and "denied" in p.stderr, p.stderr
    assert "1.0.0" in p.stdout and "2.0.0" not in p.stdout

    # One that, as the spec has it, grants a token without the access asked for: the
    # registry then refuses the token (insufficient_scope), which the error says.
    tokens.refuse = lambda user, scope: None
    tokens.grants = lambda user, name, actions: []
    p = h.relctl("image", "list", svc, check=False)
    assert p.returncode == 1, p
    assert f"registry '{url}'" in p.stderr and "insufficient_scope" in p.stderr, p.stderr
    assert "credentials refused" not in p.stderr, p.stderr  # they were not
    assert "2.0.0" not in p.stdout

    # Granted again: the tags are back.
    tokens.grants = lambda user, name, actions: actions if user else []
    tags = {t["tag"] for t in h.relctl_json("image", "list", svc)}
    assert tags == {"1.0.0", "2.0.0"}, tags


def test_anonymous_pull_through_the_token_service(harness, token_registry):
    """No registry_secret: relctl asks the token service without credentials."""
    h = harness
    url, tokens, _ = token_registry
    svc = setup_service(h, versions=("1.0.0",))
    repo = f"public/{svc}"
    push_with_token(url, tokens, repo, "4.2.0")
    h.relctl("service", "set", svc, "--env", "prod", f"image_repo={url.split('://')[1]}/{repo}",
             f"registry={url}")
    tokens.grants = lambda user, name, actions: ["pull"] if name.startswith("public/") else []
    tokens.requests.clear()
    tags = {t["tag"] for t in h.relctl_json("image", "list", svc)}
    assert tags == {"1.0.0", "4.2.0"}, tags
    assert [(r["user"], r["authorization"]) for r in tokens.requests] == [(None, "")]
