"""The benchmark's plumbing: its stack, PostgreSQL via psql, Kafka, kubesim, /proc."""
import csv
import io
import json
import os
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import re
import urllib.parse
import urllib.request
import uuid

import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_D = os.path.join(ROOT, "ops", "bench.d")
ENV = "bench"  # the env of every benchmark service


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pct(values, p):
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))]


def spread(values):
    """{median, min, max, runs} of repeated measurements."""
    vals = [v for v in values if v == v]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "runs": len(vals)}


def wait_for(pred, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- /proc ------------------------------------------------------------------------------
def proc_rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tcp_table():
    """inode -> (remote port, state) of every TCP socket of this network namespace."""
    out = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    w = line.split()
                    out[w[9]] = (int(w[2].rsplit(":", 1)[1], 16), w[3])
        except OSError:
            pass
    return out


def tcp_conns(pids, port, table=None):
    """Established TCP connections of the processes pids to the given remote port."""
    table = table if table is not None else _tcp_table()
    n = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                entry = table.get(target[8:-1])
                if entry and entry[0] == port and entry[1] == "01":
                    n += 1
    return n


def _socket_ports():
    """inode -> (local port, remote port) of every TCP socket of this network namespace."""
    out = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    w = line.split()
                    out[w[9]] = (int(w[1].rsplit(":", 1)[1], 16), int(w[2].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return out


def _socket_inodes(pid):
    out = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.append(target[8:-1])
    return out


def _proc_stat(pid):
    """(ppid, utime + stime s, cutime + cstime s) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        w = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(w[1]), (int(w[11]) + int(w[12])) / tck, (int(w[13]) + int(w[14])) / tck


_PROBE_DATA = []


def machine_probe(rounds=5):
    """Milliseconds of wall time for a fixed piece of CPU work (zlib at level 6 of 1 MiB of
    text-like bytes, the best of rounds): how fast this machine runs at the moment. The
    same build's CPU per release moves with it (a shared virtual machine's neighbours, its
    clock), so each run reports it beside its figures."""
    import random
    import zlib
    if not _PROBE_DATA:
        rnd = random.Random(20)
        words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9)))
                 for _ in range(4096)]
        _PROBE_DATA.append(b" ".join(rnd.choices(words, k=1 << 18))[:1 << 20])
    best = None
    for _ in range(rounds):
        t0 = time.perf_counter()
        zlib.compress(_PROBE_DATA[0], 6)
        ms = (time.perf_counter() - t0) * 1000.0
        best = ms if best is None else min(best, ms)
    return round(best, 2)


def _stack_components(stack):
    """name -> (pid, address) of each process `ops/stack status` lists."""
    comps = {}
    for line in stack.run("status", check=False).stdout.splitlines():
        w = line.split()
        if len(w) == 4 and w[1].startswith("pid=") and w[1][4:].isdigit():
            comps[w[0]] = (int(w[1][4:]), w[2])
    return comps


def _pg_children(master):
    """(pid, _proc_stat) of each child of PostgreSQL's postmaster."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = _proc_stat(int(d))
        except (OSError, IndexError):
            continue
        if st[0] == master:
            yield int(d), st


def _proc_events(pid):
    """(minor page faults, context switches) of a process, all its threads: the two ways
    into the kernel, besides system calls, that cost most on a virtual machine."""
    with open(f"/proc/{pid}/stat") as f:
        minflt = int(f.read().rsplit(")", 1)[1].split()[7])
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                        switches += int(line.split()[1])
        except OSError:
            continue
    return minflt, switches


class EventLedger:
    """Minor page faults and context switches of each process of a stack (PostgreSQL: its
    processes alive at both ends, together), per release: snapshot() before and after."""

    def __init__(self, stack):
        self.stack = stack

    def snapshot(self):
        comps = _stack_components(self.stack)
        pg = comps.pop("postgres", None)
        out = {}
        for name, (pid, _) in comps.items():
            try:
                out[name] = _proc_events(pid)
            except (OSError, IndexError):
                continue
        if pg:
            for pid in [pg[0]] + [child for child, _ in _pg_children(pg[0])]:
                try:
                    out[f"postgres/{pid}"] = _proc_events(pid)
                except (OSError, IndexError):
                    continue
        return out

    @staticmethod
    def per_release(before, after, n):
        """name -> (page faults, context switches) per release; PostgreSQL's processes
        summed under "postgres" (those present at both ends)."""
        res = {}
        for k, (f1, s1) in after.items():
            if k not in before:
                if k.startswith("postgres/"):
                    continue
                f0, s0 = 0, 0
            else:
                f0, s0 = before[k]
            key = "postgres" if k.startswith("postgres/") else k
            f, s = res.get(key, (0.0, 0.0))
            res[key] = (f + (f1 - f0) / n, s + (s1 - s0) / n)
        return {k: (round(f, 2), round(s, 2)) for k, (f, s) in res.items()}


class CpuLedger:
    """CPU seconds (user + system, /proc/PID/stat) of every process of a stack, by name:
    kubesim, devbroker, redis, each worker (render-1, ...), the PostgreSQL backend of each
    worker's connections ("postgres <- render-1", matched by the TCP ports of the
    connection) and the rest of PostgreSQL ("postgres (other)": postmaster, auxiliary
    processes, backends of other clients, and backends that exited, through the
    postmaster's children's times). snapshot() before and after a run; per_release()
    gives milliseconds of CPU per release of each."""

    def __init__(self, stack):
        self.stack = stack

    def snapshot(self):
        out = {}
        comps = _stack_components(self.stack)
        pg = comps.pop("postgres", None)
        ports = _socket_ports()
        pg_port = int(pg[1].rsplit(":", 1)[1]) if pg else None
        client = {}  # local port of a client's connection to PostgreSQL -> client name
        for name, (pid, _) in comps.items():
            try:
                out[name] = _proc_stat(pid)[1]
            except (OSError, IndexError):
                continue
            if pg_port is None:
                continue
            for ino in _socket_inodes(pid):
                lp_rp = ports.get(ino)
                if lp_rp and lp_rp[1] == pg_port:
                    client[lp_rp[0]] = name
        if pg:
            master = pg[0]
            other = 0.0
            try:
                _, own, children = _proc_stat(master)
                other = own + children
            except (OSError, IndexError):
                pass
            for d, (_, cpu, _) in _pg_children(master):
                who = None
                for ino in _socket_inodes(d):
                    lp_rp = ports.get(ino)
                    if lp_rp and lp_rp[0] == pg_port and lp_rp[1] in client:
                        who = client[lp_rp[1]]
                        break
                key = f"postgres <- {who}" if who else "postgres (other)"
                if who:
                    out[key] = out.get(key, 0.0) + cpu
                else:
                    other += cpu
            out["postgres (other)"] = other
        return out

    @staticmethod
    def per_release(before, after, n):
        """name -> ms of CPU per release over the run (processes present at both ends;
        a name that is new at the end counts from zero)."""
        res = {}
        for k, v in after.items():
            res[k] = round((v - before.get(k, 0.0)) * 1000.0 / n, 3)
        res["total"] = round(sum(v for k, v in res.items()), 3)
        return res


class Sampler(threading.Thread):
    """Samples RSS and connections of a process every interval until stopped."""

    def __init__(self, pid, port, interval=0.5):
        super().__init__(daemon=True)
        self.pid, self.port, self.interval = pid, port, interval
        self.rss_max, self.conns_max, self.samples = 0, 0, 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.rss_max = max(self.rss_max, proc_rss_kib(self.pid))
                self.conns_max = max(self.conns_max, tcp_conns([self.pid], self.port))
                self.samples += 1
            except (OSError, StopIteration):
                pass
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join(5)


def metrics_text(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def metric_total(text, name, label=None):
    """The sum of a metric's samples in a /metrics text (those whose labels contain label)."""
    total = 0.0
    for m in re.finditer(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)$", text, re.M):
        if label and label not in (m.group(1) or ""):
            continue
        try:
            total += float(m.group(2))
        except ValueError:
            pass
    return total


class Cgroups:
    """CPU-limited cgroups (v1, /sys/fs/cgroup/cpu), one per process, under a folder of
    this run's own; cleanup() moves what is left to the root cgroup and removes them."""

    ROOT = "/sys/fs/cgroup/cpu"
    PERIOD_US = 100000

    def __init__(self):
        self.base = os.path.join(self.ROOT, f"relfleet-bench-{os.getpid()}")
        os.makedirs(self.base, exist_ok=True)
        self.groups = {}

    @classmethod
    def available(cls):
        return os.access(os.path.join(cls.ROOT, "cgroup.procs"), os.W_OK)

    def add(self, name, pid, cores):
        d = os.path.join(self.base, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cpu.cfs_period_us"), "w") as f:
            f.write(str(self.PERIOD_US))
        with open(os.path.join(d, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(cores * self.PERIOD_US)))
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        self.groups[name] = d

    def throttled(self, name):
        """(periods, throttled periods, throttled seconds) of a cgroup so far."""
        out = {}
        with open(os.path.join(self.groups[name], "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                out[k] = int(v)
        return out.get("nr_periods", 0), out.get("nr_throttled", 0), out.get("throttled_time", 0) / 1e9

    def cleanup(self):
        for d in list(self.groups.values()) + [self.base]:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids = [l.strip() for l in f if l.strip()]
                for pid in pids:
                    try:
                        with open(os.path.join(self.ROOT, "cgroup.procs"), "w") as f:
                            f.write(pid)
                    except OSError:
                        pass
                if d != self.base:
                    os.rmdir(d)
            except OSError:
                pass
        try:
            os.rmdir(self.base)
        except OSError:
            pass
        self.groups = {}


# -- the stack --------------------------------------------------------------------------
class Stack:
    """ops/stack in a state folder of its own, kubesim with the benchmark's rules."""

    def __init__(self, build_dir, partitions=6):
        self.build_dir = build_dir
        self.state = tempfile.mkdtemp(prefix="relfleet-bench-", dir="/tmp")
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELFLEET_")}
        base.update(RELFLEET_STATE_DIR=self.state, RELFLEET_BUILD_DIR=build_dir,
                    RELFLEET_KUBESIM_TIME_SCALE="1",
                    RELFLEET_KUBESIM_RULES=os.path.join(BENCH_D, "rules.yaml"),
                    RELFLEET_STACK_PARTITIONS=str(partitions),
                    # the lag gauges (and with them each worker's partitions) every 0.5 s
                    RELFLEET_KAFKA_STATS_INTERVAL_MS="500",
                    RELFLEET_STACK_STAGES="render apply track notify",
                    # no scrapes: each second's /metrics would count towards the workers' CPU
                    RELFLEET_STACK_PROMETHEUS="off")
        self.partitions = partitions
        self.base_env = base
        self.env = {}
        self.is_up = False

    def run(self, *args, check=True, timeout=120):
        p = subprocess.run([os.path.join(ROOT, "ops", "stack"), *args], env=self.base_env,
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode:
            raise RuntimeError(f"ops/stack {' '.join(args)}: {p.stderr.strip()[-800:]}")
        return p

    def up(self):
        say(f"starting the stack in {self.state}")
        self.is_up = True
        self.run("up")
        for line in self.run("env").stdout.splitlines():
            w = shlex.split(line)
            if len(w) == 2 and w[0] == "export" and "=" in w[1]:
                k, v = w[1].split("=", 1)
                self.env[k] = v
        self.env["PGPASSFILE"] = os.path.join(self.state, "pgpass")

    def down(self):
        if self.is_up:
            self.is_up = False
            self.run("down", check=False, timeout=180)
            shutil.rmtree(self.state, ignore_errors=True)

    def workers(self, stage=None):
        """[(stage, n, pid, metrics address)] of the live workers."""
        rows = []
        for line in self.run("status", check=False).stdout.splitlines():
            w = line.split()
            if len(w) == 4 and w[3] == "alive" and w[1].startswith("pid="):
                name = w[0]
                if "-" in name and name.rsplit("-", 1)[1].isdigit():
                    st, n = name.rsplit("-", 1)
                    if stage is None or st == stage:
                        rows.append((st, int(n), int(w[1][4:]), w[2]))
        return rows

    STAGE_TOPIC = {"render": "requests", "apply": "rendered", "track": "applied"}

    def assigned(self, addr, stage):
        """The partitions of the stage's input topic a worker holds, per its lag gauges."""
        topic = self.env.get("RELFLEET_TOPIC_PREFIX", "relfleet.") + self.STAGE_TOPIC[stage]
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return set()
        return {m.group(1) for m in re.finditer(
            r'^relfleet_kafka_consumer_lag\{[^}]*partition="(\d+)"[^}]*\}', text, re.M)
            if f'topic="{topic}"' in m.group(0)}

    def wait_balanced(self, stages=("render", "apply", "track"), timeout=60):
        """Waits until, in each stage, every live worker holds a share of the input topic's
        partitions and together they hold all of them, each once (a finished rebalance)."""
        def balanced():
            for stage in stages:
                shares = [self.assigned(addr, stage) for _, _, _, addr in self.workers(stage)]
                every = [p for share in shares for p in share]
                if not shares or not all(shares) or len(every) != len(set(every)) or \
                        len(every) != self.partitions:
                    return False
            return True
        wait_for(balanced, timeout, f"the consumer groups of {', '.join(stages)} to rebalance",
                 0.2)

    def stop_worker(self, stage):
        """SIGTERM to the stage's oldest worker; waits until it has exited."""
        out = self.run("worker", "kill", stage, "TERM").stdout.split()
        pid = int(out[2])
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30,
                 f"{stage} worker {pid} to exit")

    def component_pid(self, name):
        for line in self.run("status", check=False).stdout.splitlines():
            w = line.split()
            if len(w) == 4 and w[0] == name:
                return int(w[1][4:])
        return None

    def client_env(self):
        env = dict(self.base_env)
        env.update(self.env)
        return env


class Context:
    """What the figures use: psql, Kafka, kubesim, relctl, against one stack."""

    def __init__(self, stack):
        self.stack = stack
        self.env = stack.client_env()
        self.prefix = self.env.get("RELFLEET_TOPIC_PREFIX", "relfleet.")
        self.bin = os.path.join(stack.build_dir, "bin")
        kdir = os.path.join(stack.state, "kubesim")
        self.kube_url = open(os.path.join(kdir, "kubesim.addr")).read().split()[0]
        self.kube_port = urllib.parse.urlsplit(self.kube_url).port
        self.kubeconfig = self.env["RELFLEET_KUBECONFIG"]
        self.kube_ca = os.path.join(kdir, "ca.crt")
        self.kube_token = open(os.path.join(kdir, "token")).read().strip()
        self._local = threading.local()
        self.relctl("template", "sync", self.bench_templates())

    # -- tools
    def relctl(self, *args):
        p = subprocess.run([os.path.join(self.bin, "relctl"), *args], env=self.env,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode:
            raise RuntimeError(f"relctl {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def psql(self, sql, timeout=300):
        dsn = urllib.parse.urlsplit(self.env["RELFLEET_PG_DSN"])
        env = dict(self.env, PGHOST=dsn.hostname, PGPORT=str(dsn.port), PGUSER=dsn.username,
                   PGDATABASE=dsn.path.lstrip("/"))
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t", "-c", sql],
                           env=env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if p.returncode:
            raise RuntimeError(f"psql: {p.stderr.strip()[:500]}")
        return list(csv.reader(io.StringIO(p.stdout)))

    def bench_templates(self):
        """The demo's web template (130 lines) without minReadySeconds, so that a pod ready
        at once makes its rollout complete at once; synced as template 'benchweb'."""
        d = os.path.join(self.stack.state, "templates")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(ROOT, "ops", "demo", "templates", "web.yaml")) as f:
            body = f.read().replace("minReadySeconds: 5", "minReadySeconds: 0")
        with open(os.path.join(d, "benchweb.yaml"), "w") as f:
            f.write(body)
        return d

    def services(self, prefix, n, template="benchweb", namespace=None):
        """Creates services PREFIX00001.. in env bench (idempotent); returns their names."""
        namespace = namespace or prefix
        self.psql(
            "INSERT INTO services (service, env, namespace, replicas, template_id, port,"
            " image_repo, timeout_s, updated_by) SELECT '%s' || lpad(i::text, 5, '0'), '%s', '%s',"
            " 1, '%s', 8080, 'registry.local/bench', 600, 'bench' FROM generate_series(1, %d) i"
            " ON CONFLICT DO NOTHING" % (prefix, ENV, namespace, template, n))
        return [f"{prefix}{i:05d}" for i in range(1, n + 1)]

    # -- Kafka
    def topic(self, suffix):
        return self.prefix + suffix

    def producer(self):
        from confluent_kafka import Producer
        return Producer({"bootstrap.servers": self.env["RELFLEET_KAFKA_BROKERS"],
                         "linger.ms": 1, "enable.idempotence": True})

    def request(self, service, version, rid=None):
        rid = rid or str(uuid.uuid4())
        now = time.time()
        body = {"schema": "relfleet.request.v1", "release_id": rid, "service": service,
                "env": ENV, "version": version, "kind": "deploy", "operator": "bench",
                "requested_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + ".%03dZ" % int(now % 1 * 1000)}
        return rid, json.dumps(body)

    def results_reader(self):
        return ResultsReader(self)

    # -- kubesim
    def kube(self):
        s = getattr(self._local, "s", None)
        if s is None:
            s = requests.Session()
            s.headers["Authorization"] = "Bearer " + self.kube_token
            s.verify = False  # loopback kubesim with its self-signed CA
            s.trust_env = False  # no CA bundle or proxy from the environment
            self._local.s = s
        return s


class ResultsReader(threading.Thread):
    """Reads `results` from its current end: release id -> (CreateTime s, received s, status)."""

    def __init__(self, ctx):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition
        self.got = {}
        self.stop_ev = threading.Event()
        self.c = Consumer({"bootstrap.servers": ctx.env["RELFLEET_KAFKA_BROKERS"],
                           "group.id": "bench-" + uuid.uuid4().hex, "enable.auto.commit": False,
                           "fetch.wait.max.ms": 10})
        topic = ctx.topic("results")
        meta = self.c.list_topics(topic, timeout=10)
        parts = []
        for p in sorted(meta.topics[topic].partitions):
            _, high = self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            parts.append(TopicPartition(topic, p, high))
        self.c.assign(parts)
        self.start()

    def run(self):
        while not self.stop_ev.is_set():
            m = self.c.poll(0.1)
            if m is None or m.error():
                continue
            now = time.time()
            try:
                b = json.loads(m.value())
            except ValueError:
                continue
            self.got.setdefault(b.get("release_id"), (m.timestamp()[1] / 1000.0, now, b.get("status")))
        self.c.close()

    def stop(self):
        self.stop_ev.set()
        self.join(10)


class DeployWatch(threading.Thread):
    """Watches the Deployments of a namespace; records (name, generation) -> the time the
    rollout of that generation was first seen complete (kubectl's rollout status rule)."""

    def __init__(self, ctx, namespace):
        super().__init__(daemon=True)
        self.ctx, self.ns = ctx, namespace
        self.done = {}
        self.events = 0
        self.error = None
        self.stop_ev = threading.Event()
        self.ready = threading.Event()
        base = f"{ctx.kube_url}/apis/apps/v1/namespaces/{namespace}/deployments"
        r = ctx.kube().get(base, params={"limit": "1"}, timeout=60)
        r.raise_for_status()
        self.rv = r.json()["metadata"]["resourceVersion"]
        self.url = base
        self.start()

    @staticmethod
    def complete(d):
        meta, spec, st = d.get("metadata", {}), d.get("spec", {}), d.get("status", {})
        want = spec.get("replicas", 1)
        return (st.get("observedGeneration", 0) >= meta.get("generation", 0)
                and st.get("updatedReplicas", 0) >= want and st.get("replicas", 0) <= st.get("updatedReplicas", 0)
                and st.get("availableReplicas", 0) >= st.get("updatedReplicas", 0))

    def run(self):
        s = requests.Session()
        s.headers["Authorization"] = "Bearer " + self.ctx.kube_token
        s.verify = False
        s.trust_env = False
        try:
            with s.get(self.url, params={"watch": "1", "resourceVersion": self.rv,
                                         "timeoutSeconds": "3600"}, stream=True,
                       timeout=(10, 3700)) as r:
                self.ready.set()
                pending = b""
                for chunk in r.iter_content(chunk_size=None):
                    now = time.time()
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        self.events += 1
                        ev = json.loads(line)
                        obj = ev.get("object", {})
                        if ev.get("type") in ("ADDED", "MODIFIED") and self.complete(obj):
                            key = (obj["metadata"]["name"], obj["metadata"].get("generation", 0))
                            self.done.setdefault(key, now)
                    if self.stop_ev.is_set():
                        break
        except Exception as e:  # reported by the figure
            if not self.stop_ev.is_set():
                self.error = repr(e)
        finally:
            self.ready.set()

    def stop(self):
        self.stop_ev.set()


def epoch_rows(rows):
    return [[float(x) if i else x for i, x in enumerate(r)] for r in rows]


def sslctx():
    return ssl.create_default_context()
