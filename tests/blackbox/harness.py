"""Black-box test harness: runs a local stack (ops/stack) and drives the real binaries against it."""
import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "ops" / "stack"
# What `ops/stack env` prints.
STACK_SETTINGS = {
    "RELFLEET_STATE_DIR", "RELFLEET_KAFKA_BROKERS", "RELFLEET_PG_DSN",
    "RELFLEET_REDIS_URL", "RELFLEET_KUBECONFIG", "RELFLEET_SECRETS_FILE", "RELFLEET_TOKEN",
    "RELFLEET_BROKER_CTL", "RELFLEET_API_URL", "RELFLEET_PROMETHEUS_URL",
}


def build_dir():
    """The build folder: $RELFLEET_BUILD_DIR (relative to the repo) or <repo>/build."""
    path = Path(os.environ.get("RELFLEET_BUILD_DIR", "build"))
    return path if path.is_absolute() else (REPO / path).resolve()


def bin_path(name):
    return build_dir() / "bin" / name


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate, timeout, what, interval=0.1):
    """Polls predicate until it returns something truthy (returned) or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def parse_env(text):
    """Parses `ops/stack env` (export NAME=VALUE lines, shell-quoted) into a dict."""
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


def pid_alive(pid):
    """True when the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Stack:
    """One local stack in its own state folder; up() and down() run ops/stack (with ha,
    ops/stack up --ha: the replicated stack)."""

    def __init__(self, state_dir=None, extra_env=None, ha=False):
        self.ha = ha
        self.own_dir = state_dir is None
        # Short path under /tmp: PostgreSQL's unix socket path must stay under 108 bytes.
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="relfleet-stack-", dir="/tmp"))
        # Settings of a stack the caller had eval'ed must not leak into this one; any other
        # RELFLEET_* setting passes through to the workers, as ops/stack promises.
        self.base_env = {k: v for k, v in os.environ.items() if k not in STACK_SETTINGS}
        self.base_env["RELFLEET_STATE_DIR"] = str(self.state_dir)
        self.base_env["RELFLEET_BUILD_DIR"] = str(build_dir())
        self.base_env.setdefault("RELFLEET_KUBESIM_TIME_SCALE", "20")
        self.base_env.update(extra_env or {})
        self.env = {}
        self.is_up = False

    def run(self, *args, check=True, timeout=120):
        """Runs ops/stack ARGS... in this stack's folder; returns the CompletedProcess."""
        proc = subprocess.run(
            [str(STACK), *args], env=self.base_env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ops/stack {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def up(self):
        self.is_up = True
        self.run("up", *(["--ha"] if self.ha else []), timeout=180 if self.ha else 120)
        self.env = parse_env(self.run("env").stdout)
        return self

    def down(self):
        if self.is_up:
            self.is_up = False
            return self.run("down", check=False)
        return None

    def status(self):
        """{component: (pid, address, state)} and the exit status of `ops/stack status`; on
        an HA stack (ops/stack up --ha) its components' rows have a fourth item, the role."""
        proc = self.run("status", check=False)
        rows = {}
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 4 and words[1].startswith("pid="):
                role = (" ".join(words[4:]),) if len(words) > 4 else ()
                rows[words[0]] = (words[1][4:], words[2], words[3]) + role
        return rows, proc.returncode

    def pids(self):
        """Every pid the stack's pid files name (components and workers)."""
        rows, _ = self.status()
        return {name: int(row[0]) for name, row in rows.items() if row[0].isdigit()}

    def client_env(self):
        env = dict(self.base_env)
        env.update(self.env)
        env["PGPASSFILE"] = str(self.state_dir / "pgpass")
        return env

    def save_logs(self, dest):
        logs = self.state_dir / "logs"
        if logs.is_dir():
            shutil.copytree(logs, dest, dirs_exist_ok=True)

    def remove(self):
        if self.own_dir and not self.is_up:
            shutil.rmtree(self.state_dir, ignore_errors=True)


class Message:
    """One record read from a topic."""

    def __init__(self, topic, partition, offset, key, value, headers):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.headers = key, value, headers or []

    def json(self):
        return json.loads(self.value)

    def __repr__(self):
        return f"Message({self.topic}[{self.partition}]@{self.offset} key={self.key!r} value={self.value[:200]!r})"


class Harness:
    """What a black-box test uses: the stack's settings and ways to poke at each server."""

    def __init__(self, stack):
        self.stack = stack
        self.env = stack.client_env()
        self.prefix = self.env.get("RELFLEET_TOPIC_PREFIX", "relfleet.")

    # -- relctl -------------------------------------------------------------------------
    def relctl(self, *args, check=True, input=None, timeout=120):
        exe = bin_path("relctl")
        proc = subprocess.run(
            [str(exe), *map(str, args)], env=self.env, capture_output=True, text=True,
            input=input, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"relctl {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def relctl_json(self, *args, **kwargs):
        args = list(map(str, args))
        if "--output" not in args:
            args += ["--output", "json"]
        proc = self.relctl(*args, **kwargs)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"relctl {' '.join(args)} printed no JSON ({e}):\n{proc.stdout}")

    # -- PostgreSQL ---------------------------------------------------------------------
    def psql(self, sql):
        """Runs SQL with the psql CLI; returns the rows as lists of strings (NULL is '')."""
        dsn = urllib.parse.urlsplit(self.env["RELFLEET_PG_DSN"])
        # host:port[,host:port...] (the HA stack's multi-host DSN: the writable one).
        hosts = [h.rsplit(":", 1) for h in dsn.netloc.rsplit("@", 1)[-1].split(",")]
        env = dict(self.env)
        env.update(PGHOST=",".join(h[0] for h in hosts), PGPORT=",".join(h[1] for h in hosts),
                   PGUSER=dsn.username, PGDATABASE=dsn.path.lstrip("/"),
                   PGTARGETSESSIONATTRS="read-write")
        proc = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t", "-c", sql],
            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(f"psql failed on {sql!r}: {proc.stderr}")
        return [row for row in csv.reader(io.StringIO(proc.stdout))]

    # -- Kafka --------------------------------------------------------------------------
    def topic(self, suffix):
        return suffix if suffix.startswith(self.prefix) else self.prefix + suffix

    def consume(self, topic_suffix, timeout=10, until=None):
        """Reads a topic from the beginning with an independent client. Without until: what is
        there now (up to the end offsets seen at the start). With until(messages): until it
        returns true, failing after timeout."""
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

        topic = self.topic(topic_suffix)
        consumer = Consumer({
            "bootstrap.servers": self.env["RELFLEET_KAFKA_BROKERS"],
            "group.id": "harness-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,  # the dev broker waits this long on an empty partition
        })
        messages = []
        try:
            meta = consumer.list_topics(topic, timeout=10)
            if topic not in meta.topics or meta.topics[topic].error is not None:
                raise AssertionError(f"topic {topic} does not exist")
            partitions = sorted(meta.topics[topic].partitions)
            ends = {}
            for p in partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                ends[p] = high
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            deadline = time.monotonic() + timeout
            done = {p for p in partitions if ends[p] == 0} if until is None else set()
            while True:
                if until is None and done == set(partitions):
                    return messages
                if until is not None and until(messages):
                    return messages
                if time.monotonic() >= deadline:
                    if until is None:
                        raise WaitTimeout(f"timed out after {timeout}s reading {topic} to its end")
                    raise WaitTimeout(
                        f"timed out after {timeout}s consuming {topic}; read {len(messages)}: "
                        f"{messages[-5:]!r}")
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == -191:  # _PARTITION_EOF
                        if until is None and msg.offset() >= ends[msg.partition()]:
                            done.add(msg.partition())
                        continue
                    raise AssertionError(f"consuming {topic}: {msg.error()}")
                messages.append(Message(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                        msg.value(), msg.headers()))
                if until is None and msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        finally:
            consumer.close()

    def produce(self, topic_suffix, key, value, headers=None):
        """Produces one record (raw bytes or str) and waits for its delivery."""
        from confluent_kafka import Producer

        producer = Producer({
            "bootstrap.servers": self.env["RELFLEET_KAFKA_BROKERS"],
            "enable.idempotence": True,
        })
        result = {}

        def delivered(err, msg):
            result["err"] = err
            result["msg"] = msg

        producer.produce(self.topic(topic_suffix), key=key, value=value, headers=headers,
                         on_delivery=delivered)
        if producer.flush(30) != 0 or "err" not in result:
            raise AssertionError(f"produce to {topic_suffix}: not delivered within 30s")
        if result["err"] is not None:
            raise AssertionError(f"produce to {topic_suffix}: {result['err']}")
        msg = result["msg"]
        return msg.partition(), msg.offset()

    def broker_ctl(self, cmd, check=True):
        """Sends one control command to the stack's dev broker; returns its reply line."""
        proc = subprocess.run(
            [str(bin_path("relfleet-devbroker")), "ctl", "--addr", self.env["RELFLEET_BROKER_CTL"],
             *cmd.split()],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        reply = proc.stdout.strip()
        if check and proc.returncode != 0:
            raise AssertionError(f"broker control '{cmd}' failed: {reply} {proc.stderr.strip()}")
        return reply

    # -- misc ---------------------------------------------------------------------------
    @staticmethod
    def wait_for(predicate, timeout, what, interval=0.1):
        return wait_for(predicate, timeout, what, interval)

    @staticmethod
    def unique_service(prefix="svc"):
        """A fresh service name, a valid DNS label, so tests never collide on one stack."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"[:63]
