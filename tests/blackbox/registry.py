"""Debian's docker-registry on a free loopback port, for the registry-tag tests: the
auth section of its configuration comes from the test (htpasswd Basic auth, a token
server)."""
import contextlib
import os
import socket
import subprocess

import pytest
import requests

from harness import Harness

EXE = "/usr/bin/docker-registry"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def docker_registry(tmp_path, auth_yaml):
    """Serves until the block ends; yields its URL. auth_yaml is the indented body of the
    configuration's `auth:` section."""
    if not os.path.exists(EXE):
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    (tmp_path / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {tmp_path / "data"}
http:
  addr: 127.0.0.1:{port}
auth:
{auth_yaml}""")
    log = open(tmp_path / "registry.log", "w")
    proc = subprocess.Popen([EXE, "serve", str(tmp_path / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, (tmp_path / "registry.log").read_text()
        try:
            return requests.get(url + "/v2/", timeout=2).status_code == 401
        except requests.ConnectionError:
            return False
    try:
        Harness.wait_for(up, 30, "docker-registry to listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
