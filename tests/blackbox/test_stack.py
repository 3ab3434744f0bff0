"""ops/stack: up, status, env, down, workers, and two stacks side by side."""
import json
import os
import signal
import stat
import subprocess
import textwrap

import pytest

from harness import Harness, bin_path, build_dir, pid_alive, wait_for


def _topics(env):
    out = subprocess.run(["kcat", "-b", env["RELFLEET_KAFKA_BROKERS"], "-L", "-J"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return {t["topic"]: len(t["partitions"]) for t in json.loads(out)["topics"]}


def _ports(env):
    return {env["RELFLEET_KAFKA_BROKERS"], env["RELFLEET_BROKER_CTL"],
            env["RELFLEET_PG_DSN"].rsplit("@", 1)[1].split("/")[0],
            env["RELFLEET_REDIS_URL"].split("//")[1].split("/")[0]}


def assert_on_no_command_line(*secrets):
    """No running process has any of the secrets on its command line."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            assert not [s for s in secrets if s in cmdline], f"secret in pid {pid}"


def test_env_names_every_setting(stack):
    env = stack.env
    for name in ("RELFLEET_STATE_DIR", "RELFLEET_KAFKA_BROKERS", "RELFLEET_TOPIC_PREFIX",
                 "RELFLEET_PG_DSN", "RELFLEET_REDIS_URL", "RELFLEET_SECRETS_FILE",
                 "RELFLEET_TOKEN", "RELFLEET_BROKER_CTL", "PATH"):
        assert env.get(name), f"ops/stack env lacks {name}"
    assert env["RELFLEET_STATE_DIR"] == str(stack.state_dir)
    assert env["PATH"].split(":")[0] == str(build_dir() / "bin")
    assert env["RELFLEET_PG_DSN"].startswith("postgresql://relfleet:")
    assert env["RELFLEET_PG_DSN"].endswith("/relfleet")
    assert env["RELFLEET_REDIS_URL"].startswith("redis://127.0.0.1:")
    assert env["RELFLEET_KAFKA_BROKERS"].startswith("127.0.0.1:")
    if bin_path("kubesim").exists():
        assert os.path.exists(env["RELFLEET_KUBECONFIG"])
    else:
        assert "RELFLEET_KUBECONFIG" not in env


def test_every_server_answers(stack, harness):
    assert harness.psql("SELECT current_user, current_database()") == [["relfleet", "relfleet"]]
    pong = subprocess.run(["redis-cli", "-u", stack.env["RELFLEET_REDIS_URL"], "ping"],
                          capture_output=True, text=True, timeout=10)
    assert pong.stdout.strip() == "PONG"
    topics = _topics(stack.env)
    for suffix in ("requests", "rendered", "applied", "commands", "results", "dlq"):
        assert topics.get("relfleet." + suffix) == 6
    assert harness.broker_ctl("ping") == "ok"


def test_secrets_stay_in_files(stack):
    password = (stack.state_dir / "pg.password").read_text().strip()
    token = stack.env["RELFLEET_TOKEN"]
    assert f"admin_token={token}" in (stack.state_dir / "secrets").read_text()
    for name in ("secrets", "pg.password", "pgpass", "stack.env"):
        mode = stat.S_IMODE((stack.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    # Not in what status prints, not on any process's command line.
    status = stack.run("status").stdout
    assert password not in status and token not in status
    assert_on_no_command_line(password, token)


def test_status_lists_components_alive(stack):
    rows, code = stack.status()
    assert code == 0
    for name in ("postgres", "redis", "devbroker"):
        pid, addr, state = rows[name]
        assert state == "alive" and pid_alive(int(pid)) and addr.startswith("127.0.0.1:")


def _build_setting(name):
    """A setting of the build's CMake cache (None when it is not set there)."""
    for line in (build_dir() / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split("=", 1)[1]
    return None


def _on(value):
    return (value or "").upper() in ("ON", "TRUE", "1", "YES")


def test_kubesim_runs_on_jemalloc_and_the_workers_on_the_c_library(stack):
    """RELFLEET_KUBESIM_JEMALLOC (on unless set off; never in a sanitizer build) links
    kubesim, and only kubesim, with jemalloc."""
    option = _build_setting("RELFLEET_KUBESIM_JEMALLOC")
    want = (option is None or _on(option)) and not _on(_build_setting("RELFLEET_SANITIZE"))
    servers = {}
    for name, pid in stack.pids().items():
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        if exe in ("relfleet-worker", "relfleet-api", "kubesim"):
            servers[name] = (exe, pid)
    assert {exe for exe, _ in servers.values()} == {"relfleet-worker", "relfleet-api", "kubesim"}, servers
    for name, (exe, pid) in servers.items():
        with open(f"/proc/{pid}/maps") as f:
            mapped = "/libjemalloc.so" in f.read()
        assert mapped == (want and exe == "kubesim"), (name, exe, mapped, want)


def test_up_again_is_a_noop(stack):
    before = stack.pids()
    proc = stack.run("up")
    assert "already up" in proc.stdout
    assert stack.pids() == before


def test_two_stacks_side_by_side(stack, stack_factory):
    first = stack.pids()
    other = stack_factory.start()
    assert not _ports(stack.env) & _ports(other.env), "two stacks share a port"
    assert other.status()[1] == 0
    Harness(other).produce("requests", b"k", b"only in the other stack")
    assert not [m for m in Harness(stack).consume("requests")
                if m.value == b"only in the other stack"]

    theirs = other.pids()
    other.down()
    assert not any(pid_alive(p) for p in theirs.values()), "down left a process running"
    assert stack.pids() == first and stack.status()[1] == 0, "down stopped the other stack"
    assert all(pid_alive(p) for p in first.values())

    # Down again is harmless; env says there is nothing up.
    assert other.run("down").returncode == 0
    assert other.run("env", check=False).returncode != 0
    rows, code = other.status()
    assert code != 0 and not rows


def test_status_reports_killed_component(stack_factory):
    s = stack_factory.start()
    pids = s.pids()
    os.kill(pids["redis"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(pids["redis"]), 10, "redis to die")
    rows, code = s.status()
    assert code == 1
    assert rows["redis"][2] == "dead"
    assert rows["postgres"][2] == "alive" and rows["devbroker"][2] == "alive"
    # Up refuses a half-dead stack rather than pretending it is up.
    assert s.run("up", check=False).returncode != 0
    s.down()
    assert not any(pid_alive(p) for p in pids.values())


def test_down_after_crash_of_everything(stack_factory):
    s = stack_factory.start()
    pids = s.pids()
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in pids.values()), 10, "the stack to die")
    assert s.run("down").returncode == 0
    # And it comes back up on the same data.
    s.up()
    assert Harness(s).psql("SELECT 1") == [["1"]]


FAKE_WORKER = textwrap.dedent("""\
    #!/bin/bash
    # Stands in for relfleet-worker: reports its stages and its RELFLEET_* environment.
    if [ "$1" = --list-stages ]; then printf 'render\\napply\\ntrack\\nnotify\\n'; exit 0; fi
    env | grep '^RELFLEET_' | sort > "$RELFLEET_STATE_DIR/fake-$1-$$.env"
    # As a worker does once it listens (it serves nothing here).
    echo 127.0.0.1:9 > "$RELFLEET_METRICS_ADDR_FILE"
    trap 'exit 0' TERM
    while :; do sleep 0.2; done
""")


@pytest.fixture
def fake_build(tmp_path):
    """A build folder whose relfleet-worker is a stand-in, beside the real other binaries
    (so this test of ops/stack's worker handling does not depend on the real workers)."""
    bindir = tmp_path / "build" / "bin"
    bindir.mkdir(parents=True)
    for exe in (build_dir() / "bin").iterdir():
        if exe.name != "relfleet-worker":
            (bindir / exe.name).symlink_to(exe)
    worker = bindir / "relfleet-worker"
    worker.write_text(FAKE_WORKER)
    worker.chmod(0o755)
    return tmp_path / "build"


def test_workers_start_kill_list(stack_factory, fake_build):
    s = stack_factory.start({
        "RELFLEET_BUILD_DIR": str(fake_build), "RELFLEET_STACK_STAGES": "render apply",
        "RELFLEET_STACK_WORKERS_PER_STAGE": "2", "RELFLEET_PG_DSN": "postgresql://stale/x",
        "RELFLEET_TEST_PASSTHROUGH": "yes",
    })

    def listed():
        out = s.run("worker", "list").stdout.split("\n")
        return [tuple(line.split()) for line in out if line]

    workers = listed()
    assert sorted((w[0], w[1], w[3]) for w in workers) == [
        ("apply", "1", "alive"), ("apply", "2", "alive"),
        ("render", "1", "alive"), ("render", "2", "alive")]

    # The workers got the stack's settings over the caller's, and the caller's other ones.
    envs = wait_for(lambda: len(list(s.state_dir.glob("fake-*.env"))) == 4 and
                    list(s.state_dir.glob("fake-*.env")), 10, "the workers' environments")
    text = envs[0].read_text()
    assert "RELFLEET_TEST_PASSTHROUGH=yes" in text
    assert f"RELFLEET_PG_DSN={s.env['RELFLEET_PG_DSN']}\n" in text
    assert f"RELFLEET_KAFKA_BROKERS={s.env['RELFLEET_KAFKA_BROKERS']}\n" in text

    # kill takes the oldest of the stage, by default with SIGKILL.
    render1 = int(dict(((w[0], w[1]), w[2]) for w in workers)[("render", "1")])
    s.run("worker", "kill", "render")
    wait_for(lambda: not pid_alive(render1), 10, "render-1 to die")
    assert sorted((w[0], w[1]) for w in listed()) == [("apply", "1"), ("apply", "2"),
                                                     ("render", "2")]
    assert s.status()[1] == 0, "a killed worker must not count as dead"

    started = s.run("worker", "start", "render").stdout.split()
    assert started[:2] == ["render", "3"] and pid_alive(int(started[2]))
    assert (s.state_dir / "logs" / "render-3.log").exists()

    # kill with another signal; the worker exits on TERM.
    apply1 = int(dict(((w[0], w[1]), w[2]) for w in listed())[("apply", "1")])
    s.run("worker", "kill", "apply", "TERM")
    wait_for(lambda: not pid_alive(apply1), 10, "apply-1 to exit on TERM")

    # A worker that died by itself shows as dead.
    render2 = int(dict(((w[0], w[1]), w[2]) for w in listed())[("render", "2")])
    os.kill(render2, signal.SIGKILL)
    wait_for(lambda: not pid_alive(render2), 10, "render-2 to die")
    rows, code = s.status()
    assert code == 1 and rows["render-2"][2] == "dead"

    pids = [int(w[2]) for w in listed()]
    s.down()
    assert not any(pid_alive(p) for p in pids)
