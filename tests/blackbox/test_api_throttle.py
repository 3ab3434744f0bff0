"""Throttling of failed authentication in relfleet-api: per client address (bearer tokens,
sessions, logins) and per user a login names, 429 with Retry-After while blocked, blocks
that double, no reset of an address by a success (a login resets its user), every attempt
logged. A relfleet-api of its own (small
windows) on the session's stack; clients bind to other loopback addresses (127.0.0.0/8)."""
import http.client
import json
import re
import subprocess
import threading
import time

import pytest

from harness import Harness, bin_path, pid_alive, wait_for

LIMIT, WINDOW_MS, BLOCK_MS, BLOCK_MAX_MS = 3, 5000, 500, 4000


@pytest.fixture(scope="module")
def h(stack):
    return Harness(stack)


@pytest.fixture(scope="module")
def api(h, tmp_path_factory):
    """A relfleet-api with small throttle settings: (host, port, log path)."""
    d = tmp_path_factory.mktemp("api-throttle")
    env = dict(h.env, RELFLEET_AUTH_FAIL_LIMIT=str(LIMIT),
               RELFLEET_AUTH_FAIL_WINDOW_MS=str(WINDOW_MS),
               RELFLEET_AUTH_BLOCK_MS=str(BLOCK_MS),
               RELFLEET_AUTH_BLOCK_MAX_MS=str(BLOCK_MAX_MS))
    env.pop("RELFLEET_API_URL", None)
    log = d / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bin_path("relfleet-api")), "--listen", "127.0.0.1:0",
                                 "--addr-file", str(d / "api.addr")], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (d / "api.addr").exists() or not pid_alive(proc.pid), 30,
                 "relfleet-api to write its address")
        assert (d / "api.addr").exists(), log.read_text()
        host, port = (d / "api.addr").read_text().strip().rsplit(":", 1)
        yield host, int(port), log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def call(api, src, method, path, token=None, body=None):
    """One request from source address src: (status, headers, JSON body)."""
    host, port, _ = api
    conn = http.client.HTTPConnection(host, port, timeout=30, source_address=(src, 0))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, "/api/v1" + path, json.dumps(body) if body is not None else None,
                     headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def bearer(api, src, token):
    return call(api, src, "GET", "/session", token=token)


def login(api, src, token, user=None):
    return call(api, src, "POST", "/session", body=dict({"token": token},
                                                        **({"user": user} if user else {})))


WRONG = "rft_" + "0" * 48


def throttled(resp):
    status, headers, body = resp
    assert status == 429, resp
    assert int(headers["Retry-After"]) >= 1 and body["error"].startswith("throttled:"), resp
    assert 0 < body["retry_after_ms"] <= int(headers["Retry-After"]) * 1000, resp
    return body


def log_lines(api, pattern):
    return [line for line in api[2].read_text().splitlines() if re.search(pattern, line)]


def test_wrong_tokens_from_one_address_are_throttled_and_the_address_alone(h, api):
    token = h.env["RELFLEET_TOKEN"]
    src = "127.0.0.11"
    for _ in range(LIMIT):
        assert bearer(api, src, WRONG)[0] == 401
    started = time.monotonic()
    body = throttled(bearer(api, src, WRONG))
    assert "from client 127.0.0.11" in body["error"] and body["retry_after_ms"] <= BLOCK_MS
    retry_after = int(bearer(api, src, WRONG)[1]["Retry-After"])
    # The right token from the blocked address is refused too, unchecked: while blocked,
    # guessing gets no answer at all.
    throttled(bearer(api, src, token))
    # Another address is not blocked by this one's failures.
    status, _, me = bearer(api, "127.0.0.12", token)
    assert status == 200 and me["user"] == "admin", me
    # Once Retry-After has passed, the right token works from the blocked address.
    answers = []
    wait_for(lambda: answers.append(bearer(api, src, token)) or answers[-1][0] == 200,
             retry_after + 5, "the block of 127.0.0.11 to end")
    assert time.monotonic() - started <= retry_after + 1.0
    assert {a[0] for a in answers} <= {200, 429}, answers
    # Every attempt is recorded: the failures as 401, the throttled ones as 429 throttled.
    assert len(log_lines(api, r"refused GET /api/v1/session: 401 unknown token.*client "
                              r"127\.0\.0\.11\)")) == LIMIT
    assert len(log_lines(api, r"refused GET /api/v1/session: 429 throttled: .*client "
                              r"127\.0\.0\.11\)")) == 3 + sum(a[0] == 429 for a in answers)
    assert log_lines(api, r"blocking authentication of client 127\.0\.0\.11 for 500 ms")


def test_failed_logins_from_one_address_are_throttled(h, api):
    src = "127.0.0.13"
    for _ in range(LIMIT):
        assert login(api, src, "nope")[0] == 401
    throttled(login(api, src, h.env["RELFLEET_TOKEN"]))
    throttled(bearer(api, src, h.env["RELFLEET_TOKEN"]))


def test_blocks_double_and_a_success_does_not_start_the_address_over(h, api):
    token, src = h.env["RELFLEET_TOKEN"], "127.0.0.21"

    def next_block():
        """Wrong tokens until one is checked again (401), then the block it started."""
        wait_for(lambda: bearer(api, src, WRONG)[0] == 401, BLOCK_MAX_MS / 1000 + 5,
                 "the block to end")
        return throttled(bearer(api, src, WRONG))["retry_after_ms"]

    for _ in range(LIMIT - 1):
        assert bearer(api, src, WRONG)[0] == 401
    first = next_block()  # the LIMIT-th failure
    second = next_block()  # one failure after a block blocks again, twice as long
    third = next_block()
    assert first <= BLOCK_MS < second <= 2 * BLOCK_MS < third <= 4 * BLOCK_MS, (first, second,
                                                                                third)
    # A success does not start the address over: the first failure after it blocks again,
    # twice as long as the last block (only a window without failures forgives).
    wait_for(lambda: bearer(api, src, token)[0] == 200, BLOCK_MAX_MS / 1000 + 5,
             "the right token to be accepted")
    assert bearer(api, src, WRONG)[0] == 401
    assert throttled(bearer(api, src, WRONG))["retry_after_ms"] > 4 * BLOCK_MS


def test_a_valid_token_between_wrong_ones_does_not_clear_the_address(h, api):
    # Bug: each success reset its address, so LIMIT - 1 wrong tokens and one right one,
    # over and over, were never blocked: one valid token bought unlimited guesses.
    token, src, answers = h.env["RELFLEET_TOKEN"], "127.0.0.23", []
    for _ in range(3):
        for _ in range(LIMIT - 1):
            answers.append(bearer(api, src, WRONG)[0])
        answers.append(bearer(api, src, token)[0])
    assert 429 in answers and set(answers) <= {200, 401, 429}, answers


def test_a_successful_login_starts_its_user_over(h, api):
    name = h.unique_service("thr")
    h.relctl("user", "add", name)
    token = h.relctl("user", "token", name).stdout.strip()
    # From other addresses each time, so that no address counts: only the user does.
    for i in range(LIMIT - 1):
        assert login(api, f"127.0.0.{61 + i}", WRONG, user=name)[0] == 401
    assert login(api, "127.0.0.70", token, user=name)[0] == 200
    for i in range(LIMIT - 1):
        assert login(api, f"127.0.0.{71 + i}", WRONG, user=name)[0] == 401
    assert login(api, "127.0.0.80", token, user=name)[0] == 200


def test_failed_logins_of_one_user_are_throttled_across_addresses(h, api):
    name = h.unique_service("thr")
    h.relctl("user", "add", name)
    token = h.relctl("user", "token", name).stdout.strip()
    # A distributed guess: each address fails once, the user reaches the limit.
    for i in range(LIMIT):
        assert login(api, f"127.0.0.{31 + i}", WRONG, user=name)[0] == 401
    body = throttled(login(api, "127.0.0.40", token, user=name))
    assert f"too many failed logins of user '{name}'" in body["error"], body
    # The addresses are not blocked (one failure each); the user's bearer token, which names
    # no user before it is checked, is not throttled per user; another user logs in.
    assert bearer(api, "127.0.0.31", WRONG)[0] == 401
    assert bearer(api, "127.0.0.40", token)[2]["user"] == name
    assert login(api, "127.0.0.40", h.env["RELFLEET_TOKEN"], user="admin")[0] == 200
    retry_after = int(login(api, "127.0.0.41", token, user=name)[1]["Retry-After"])
    wait_for(lambda: login(api, "127.0.0.41", token, user=name)[0] == 200, retry_after + 5,
             f"the login block of '{name}' to end")
    assert log_lines(api, rf"blocking authentication of user '{re.escape(name)}' \(logins\)")
    assert log_lines(api, r"refused POST /api/v1/session: 429 throttled: too many failed logins")


def test_concurrent_failures_are_counted_safely(h, api):
    src, answers, lock = "127.0.0.51", [], threading.Lock()

    def guess():
        for _ in range(10):
            status = bearer(api, src, WRONG)[0]
            with lock:
                answers.append(status)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(answers) <= {401, 429} and answers.count(429) >= 40, answers
    # The other addresses and the server carry on.
    assert bearer(api, "127.0.0.52", h.env["RELFLEET_TOKEN"])[0] == 200
