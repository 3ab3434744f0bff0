"""The chaos test: releases published while workers, the broker, Redis and PostgreSQL fail
(on the HA stack: while each engine fails over), then the delivery rules of DESIGN.md checked
and counted (tests/chaos/run, test_chaos.py)."""
import collections
import math
import http.server
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blackbox"))

from harness import Harness, Stack, bin_path, pid_alive, wait_for  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled", "superseded", "rejected")
TEMPLATES = Path(__file__).resolve().parents[2] / "ops" / "demo" / "templates"
LOCK_LEASE_MS = 3000
FAULTS = ("kill", "freeze", "stale-apply", "broker-errors", "broker-down", "redis-restart",
          "postgres-restart")
# On the HA stack (ops/stack up --ha) each engine fails over instead of restarting:
# redis-restart and postgres-restart do not apply there (ops/stack refuses stop|start|restart
# on an HA stack; its outage of Redis or PostgreSQL is the failover). broker-down takes all
# three brokers down at once (broker-down -1), an outage beyond what replication covers,
# which the pipeline must still ride out as on the single broker; kafka-failover takes one.
FAILOVERS = ("redis-failover", "postgres-failover", "kafka-failover")
HA_FAULTS = ("kill", "freeze", "stale-apply", "broker-errors", "broker-down") + FAILOVERS
# A fault's effect can outlast its window (a killed worker's partitions wait for the consumer
# group to move them): a release meets a fault if its span meets [start, end + this].
FAULT_TAIL_S = 3.0

# What the stack of a chaos run gets: a short lock lease so that a freeze past it is quick,
# two workers per stage, quick sweeps and retries, simulated time 20 times faster.
STACK_ENV = {
    "RELFLEET_LOCK_LEASE_MS": str(LOCK_LEASE_MS),
    "RELFLEET_STACK_WORKERS_PER_STAGE": "2",
    "RELFLEET_SWEEP_INTERVAL_MS": "500",
    "RELFLEET_RETRY_MAX_MS": "2000",
    "RELFLEET_KUBESIM_TIME_SCALE": "20",
}


def log(msg):
    print(f"chaos {time.strftime('%H:%M:%S')} {msg}", flush=True)


class Receiver:
    """A webhook receiver on loopback: counts each delivery by its event id, answers 200."""

    def __init__(self):
        self.deliveries = collections.defaultdict(list)  # event id -> [monotonic times]
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                event = self.headers.get("X-Relfleet-Event-Id") or ""
                with receiver.lock:
                    receiver.deliveries[event].append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self):
        with self.lock:
            return {k: list(v) for k, v in self.deliveries.items()}


def parse_ts(text):
    """PostgreSQL's timestamptz text (ISO 8601) as a datetime."""
    return datetime.fromisoformat(text.replace(" ", "T"))


class Chaos:
    """One run: its stack, services, releases and faults, then the checks."""

    def __init__(self, stack, releases=24, services=4, publish_s=40.0, fault_gap_s=(1.5, 3.5),
                 seed=None, settle_s=180.0, ha=False, calm_s=None):
        self.stack = stack
        self.ha = ha  # the stack is ops/stack up --ha: HA_FAULTS instead of FAULTS
        self.kinds = HA_FAULTS if ha else FAULTS
        # Publishing without faults for this long first: on the HA stack the releases that
        # meet no fault give the baseline latency of the failovers' cost.
        self.calm_s = calm_s if calm_s is not None else (0.15 * publish_s if ha else 0.0)
        self.h = Harness(stack)
        self.n_releases = releases
        self.n_services = services
        self.publish_s = publish_s
        self.fault_gap_s = fault_gap_s
        self.settle_s = settle_s
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.receiver = Receiver()
        self.services = []
        self.stale_service = None
        self.release_ids = []        # ids relctl printed
        self.warmup = None           # the first release, before the run (not measured)
        self.acked_at = {}           # id -> time.time() when relctl acknowledged it
        self.ids_lock = threading.Lock()
        self.stale = []              # (release frozen out, release that superseded it)
        self.publish_failures = 0    # relctl deploy attempts that failed (retried)
        self.faults = collections.Counter()
        self.fault_log = []          # (monotonic time, kind, detail)
        self.windows = []            # (time.time() at its start, at its end, kind)
        self.failover_errors = []    # failed ops/stack failover commands the engine survived
        self.notify_crashes = []     # monotonic times a notify worker was killed or frozen
        self.publishing_done = threading.Event()
        self.stop_faults = threading.Event()
        self.stages = []
        self.figures = {}
        self.violations = []

    # -- helpers ------------------------------------------------------------------------
    def ctl(self, cmd):
        return self.h.broker_ctl(cmd, check=False)

    def stack_run(self, *args):
        return self.stack.run(*args, check=False, timeout=120)

    def workers(self, stage=None):
        """[(stage, n, pid, alive)] from ops/stack worker list."""
        rows = []
        for line in self.stack_run("worker", "list").stdout.splitlines():
            words = line.split()
            if len(words) == 4 and (stage is None or words[0] == stage):
                rows.append((words[0], int(words[1]), int(words[2]), words[3] == "alive"))
        return rows

    def note(self, kind, detail):
        self.faults[kind] += 1
        self.fault_log.append((time.monotonic(), kind, detail))
        log(f"fault {kind}: {detail}")

    # -- setup --------------------------------------------------------------------------
    def setup(self):
        h = self.h
        self.stages = subprocess.run([str(bin_path("relfleet-worker")), "--list-stages"],
                                     capture_output=True, text=True, check=True).stdout.split()
        self.receiver.start()
        h.relctl("template", "sync", TEMPLATES)
        for i in range(self.n_services):
            svc = h.unique_service("chaos")
            # Every third service supersedes: a stale worker there meets a newer fence.
            policy = "supersede" if i % 3 == 2 else "queue"
            h.relctl("service", "set", svc, "--env", "prod", "template=web",
                     f"namespace=ns-{svc[-10:]}", "replicas=2", f"policy={policy}", "timeout=6s")
            if "notify" in self.stages:
                h.relctl("notify", "add", svc, "--env", "prod", "--channel", "webhook",
                         "--target", self.receiver.url)
            self.services.append(svc)
        # The stale-apply scenario's own service: nothing else publishes to it.
        self.stale_service = h.unique_service("chaos")
        h.relctl("service", "set", self.stale_service, "--env", "prod", "template=web",
                 f"namespace=ns-{self.stale_service[-10:]}", "replicas=2", "policy=supersede",
                 "timeout=6s")
        if "notify" in self.stages:
            h.relctl("notify", "add", self.stale_service, "--env", "prod", "--channel",
                     "webhook", "--target", self.receiver.url)
        if self.calm_s:
            # One release through every stage first: the consumer groups have their
            # partitions, so the calm releases measure the pipeline, not its start.
            first = self.warmup = self.deploy(self.stale_service, "0.1.0")
            if self.wait_status(first, TERMINAL, 60) not in TERMINAL:
                self.violations.append(f"the first release {first} did not end within 60s")

    def all_services(self):
        return self.services + ([self.stale_service] if self.stale_service else [])

    # -- publishing ---------------------------------------------------------------------
    def publish(self):
        gap = self.publish_s / max(1, self.n_releases)
        try:
            i = 0
            while i < self.n_releases:
                svc = self.rng.choice(self.services)
                # Now and then a burst for one service, so that releases queue behind it.
                burst = self.rng.choice((1, 1, 1, 2, 3))
                for _ in range(min(burst, self.n_releases - i)):
                    bad = self.rng.random() < 0.2
                    self.deploy(svc, f"bad-{i}" if bad else f"1.{i}.0")
                    i += 1
                time.sleep(self.rng.uniform(0.3 * gap, 1.7 * gap) * burst)
        finally:
            self.publishing_done.set()

    # -- faults -------------------------------------------------------------------------
    def fault_kill(self):
        stage = self.rng.choice(self.stages)
        out = self.stack_run("worker", "kill", stage, "KILL").stdout.split()
        if stage == "notify":
            self.notify_crashes.append(time.monotonic())
        self.stack_run("worker", "start", stage)
        self.note("kill", f"SIGKILL {stage} worker {' '.join(out[1:])}, started another")

    def fault_freeze(self):
        stage = self.rng.choice([s for s in self.stages if s != "notify"] or self.stages)
        live = [w for w in self.workers(stage) if w[3]]
        if not live:
            return
        _, n, pid, _ = self.rng.choice(live)
        hold = LOCK_LEASE_MS / 1000.0 + self.rng.uniform(1.0, 3.0)
        os.kill(pid, signal.SIGSTOP)
        self.note("freeze", f"SIGSTOP {stage}-{n} (pid {pid}) for {hold:.1f}s, past the lease")
        if stage == "notify":
            self.notify_crashes.append(time.monotonic())
        # The outage itself lasts this long: nothing to wait for but the clock.
        self.stop_faults.wait(hold)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def fault_stale_apply(self):
        """Every apply worker frozen while a release of a supersede service is rendered, then
        superseded by a newer one: once resumed, the stale `rendered` must change nothing."""
        svc = self.stale_service
        live = [w for w in self.workers("apply") if w[3]]
        if not live:
            return
        for w in live:
            os.kill(w[2], signal.SIGSTOP)
        self.note("stale-apply", f"SIGSTOP every apply worker; {svc}: release, then supersede")
        try:
            old = self.deploy(svc, f"2.{len(self.release_ids)}.0")
            new = None
            if old and self.wait_status(old, ("applying",) + TERMINAL, 30) == "applying":
                new = self.deploy(svc, f"3.{len(self.release_ids)}.0")
                if new:
                    self.wait_status(old, TERMINAL, 30)
                    self.wait_status(new, ("applying",) + TERMINAL, 30)
            self.stale.append((old, new))
        finally:
            for w in live:
                try:
                    os.kill(w[2], signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def deploy(self, svc, version):
        """Publishes one release; its id, or None when relctl failed five times."""
        for _attempt in range(5):
            proc = self.h.relctl("deploy", "--service", svc, "--env", "prod", "--version",
                                 version, "-m", "chaos", "--output", "json", check=False,
                                 timeout=90)
            if proc.returncode == 0:
                rid = json.loads(proc.stdout)["release_id"]
                with self.ids_lock:
                    self.release_ids.append(rid)
                    self.acked_at[rid] = time.time()
                return rid
            self.publish_failures += 1
            log(f"deploy {svc} {version} failed ({proc.stderr.strip()[-200:]}); again")
            self.stop_faults.wait(1)
        return None

    def wait_status(self, rid, statuses, timeout):
        """Waits until the release's status is one of statuses; the last status seen."""
        seen = [None]

        def check():
            try:
                rows = self.h.psql(f"SELECT status FROM releases WHERE id = '{rid}'")
            except AssertionError:
                return False
            seen[0] = rows[0][0] if rows else None
            return seen[0] in statuses

        try:
            wait_for(check, timeout, f"release {rid} to reach {statuses}", 0.2)
        except AssertionError:
            pass
        return seen[0]

    def fault_broker_errors(self):
        api, err, count = self.rng.choice([
            ("Produce", "NOT_LEADER_FOR_PARTITION", 5), ("Produce", "_TRANSPORT", 3),
            ("Fetch", "_TRANSPORT", 3), ("Fetch", "NOT_LEADER_FOR_PARTITION", 5),
            ("OffsetCommit", "REQUEST_TIMED_OUT", 3), ("Heartbeat", "NOT_COORDINATOR", 2),
            ("InitProducerId", "COORDINATOR_NOT_AVAILABLE", 2),
        ])
        reply = self.ctl(f"push-errors {api} {err} {count}")
        self.note("broker-errors", f"push-errors {api} {err} {count}: {reply}")

    def fault_broker_down(self):
        hold = self.rng.uniform(1.0, 4.0)
        reply = self.ctl("broker-down -1")
        self.note("broker-down", f"broker down for {hold:.1f}s: {reply}")
        self.stop_faults.wait(hold)
        self.ctl("broker-up -1")

    def fault_redis_restart(self):
        proc = self.stack_run("restart", "redis")
        self.note("redis-restart", f"ops/stack restart redis: exit {proc.returncode}")
        if proc.returncode != 0:
            self.violations.append(f"ops/stack restart redis failed: {proc.stderr[-300:]}")

    def fault_postgres_restart(self):
        proc = self.stack_run("restart", "postgres")
        self.note("postgres-restart", f"ops/stack restart postgres: exit {proc.returncode}")
        if proc.returncode != 0:
            self.violations.append(f"ops/stack restart postgres failed: {proc.stderr[-300:]}")

    def failover(self, engine, *args):
        """ops/stack failover ENGINE: what an HA manager would do (ops/stack.d/ha.py)."""
        t0 = time.monotonic()
        proc = self.stack.run("failover", engine, *args, check=False, timeout=180)
        said = [line.split(": ", 1)[-1] for line in proc.stdout.splitlines()
                if line.startswith("ops/stack: ")]
        self.note(f"{engine}-failover", f"ops/stack failover {engine} {' '.join(args)}: exit "
                  f"{proc.returncode} in {time.monotonic() - t0:.1f}s; {'; '.join(said)[-400:]}")
        if proc.returncode == 0:
            return
        error = (proc.stderr + proc.stdout)[-400:]
        # ops/stack failover can give up on a failover that went right in the end (Sentinels
        # that fail over twice, the second time from the master they had just elected, make
        # the restarted old master a replica of another than the one ops/stack waits for:
        # the soak's seed 16). What counts here is the engine: replicated again.
        try:
            wait_for(lambda: self.replicated(engine), 30, f"{engine} to be replicated again", 1)
        except AssertionError:
            self.violations.append(f"ops/stack failover {engine} failed and {engine} is not "
                                   f"replicated again within 30s: {error}")
            return
        self.failover_errors.append(f"{engine}: {error}")
        log(f"ops/stack failover {engine} failed, but {engine} is replicated again: {error}")

    def replicated(self, engine):
        """The roles of ops/stack status: Redis, every Sentinel naming one master with two
        connected replicas; PostgreSQL, a primary with a synchronous standby that streams;
        Kafka, every broker up."""
        rows, _ = self.stack.status()
        role = {name: row[3] for name, row in rows.items() if len(row) == 4}
        if engine == "redis":
            masters = {r.split("master ", 1)[1].rstrip(")") for n, r in role.items()
                       if n.startswith("sentinel-") and "(master " in r}
            if len(masters) != 1 or not role.get(next(iter(masters)), "").startswith(
                    "master (2 replicas)"):
                return False
            addr = rows[next(iter(masters))][1]
            return all(r == f"replica of {addr} (connected)" for n, r in role.items()
                       if n.startswith("redis-") and n not in masters)
        if engine == "postgres":
            pg = [r for n, r in role.items() if n.startswith("postgres-")]
            return sum(r.startswith("primary (standbys: ") and r.endswith(" sync)")
                       for r in pg) == 1 and sum(r.startswith("standby (streaming")
                                                 for r in pg) == 1
        return all(row[2] == "alive" for n, row in rows.items() if n.startswith("broker-"))

    def fault_redis_failover(self):
        """The master SIGKILLed, the Sentinels elect a replica; the old one restarts and
        becomes a replica (so that the next failover has two again)."""
        self.failover("redis")

    def fault_postgres_failover(self):
        """The primary stopped immediately, the synchronous standby promoted; --rejoin: the old
        primary rewound and made the synchronous standby, so that what is acknowledged after
        this failover is on two servers again before the next one."""
        self.failover("postgres", "--rejoin")

    def fault_kafka_failover(self):
        """Every partition leader and group coordinator moved off the busiest broker, which
        then goes down for 2 s and comes back."""
        self.failover("kafka")

    def inject(self):
        """Every kind of fault once in random order, then random ones until publishing ends."""
        order = list(self.kinds)
        self.rng.shuffle(order)
        self.stop_faults.wait(self.calm_s)
        while not self.stop_faults.is_set():
            # After the first round kills come three times as often as other faults (and on
            # the HA stack failovers twice as often).
            more = ("kill", "kill") + (FAILOVERS if self.ha else ())
            kind = order.pop(0) if order else self.rng.choice(self.kinds + more)
            t0 = time.time()
            try:
                getattr(self, "fault_" + kind.replace("-", "_"))()
            except Exception as e:  # a failed injection is a finding, not a crash of the run
                self.violations.append(f"fault {kind} could not be injected: {e!r}")
            self.windows.append((t0, time.time(), kind))
            if self.publishing_done.is_set() and not order:
                break
            self.stop_faults.wait(self.rng.uniform(*self.fault_gap_s))

    # -- the run ------------------------------------------------------------------------
    def run(self):
        start = time.monotonic()
        log(f"seed {self.seed}: {self.n_releases} releases over {self.n_services} services"
            f"{' on the HA stack' if self.ha else ''}")
        self.setup()
        publisher = threading.Thread(target=self.publish, name="publisher")
        injector = threading.Thread(target=self.inject, name="faults")
        publisher.start()
        injector.start()
        publisher.join()
        injector.join(timeout=120)
        self.stop_faults.set()
        injector.join(timeout=60)
        self.ctl("broker-up -1")
        log(f"published {len(self.release_ids)} releases; faults {dict(self.faults)}; settling")
        self.settle()
        self.check()
        self.figures["seconds"] = round(time.monotonic() - start, 1)
        return self.figures

    def releases_rows(self):
        names = ",".join(f"'{s}'" for s in self.all_services())
        return self.h.psql(f"SELECT id, service, status FROM releases WHERE service IN ({names})"
                           " ORDER BY created_at")

    def settle(self):
        ids = set(self.release_ids)

        def all_ended():
            try:
                rows = self.releases_rows()
            except AssertionError:
                return False
            seen = {r[0] for r in rows}
            return ids <= seen and all(r[2] in TERMINAL for r in rows)

        try:
            wait_for(all_ended, self.settle_s, "every release to end", interval=1)
        except AssertionError as e:
            log(str(e))
            self.diagnose()
        if "notify" in self.stages:
            try:
                wait_for(self.notifications_done, 60, "every notification to be sent", 1)
            except AssertionError as e:
                log(str(e))

    def diagnose(self):
        """What a failed settle leaves for whoever reads the test's output (CI keeps nothing
        else): the stack's components, the broker's answer, the tail of the log of the broker
        and of any component that is not alive, and where the unfinished releases stopped."""
        rows, _ = self.stack.status()
        log("ops/stack status:\n" + "\n".join(f"  {name} {' '.join(row)}"
                                               for name, row in rows.items()))
        log(f"broker ping: {self.ctl('ping')!r}")
        logs = self.stack.state_dir / "logs"
        dead = [name for name, (_, _, state) in rows.items() if state != "alive"]
        for name in ["devbroker"] + [d for d in dead if d != "devbroker"]:
            path = logs / f"{name}.log"
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-15:]
                log(f"tail of {path.name}:\n" + "\n".join(tail))
        try:
            names = ",".join(f"'{s}'" for s in self.all_services())
            terminal = ",".join(f"'{s}'" for s in TERMINAL)
            for row in self.h.psql(
                    "SELECT r.id, r.status, (SELECT t.event || ': ' || left(t.message, 120)"
                    " FROM timeline t WHERE t.release_id = r.id ORDER BY t.id DESC"
                    f" LIMIT 1) FROM releases r WHERE r.service IN ({names}) AND r.status"
                    f" NOT IN ({terminal})"):
                log(f"unfinished {row[0]} {row[1]}: {row[2]}")
        except AssertionError as e:
            log(f"releases not readable: {e}")

    def notifications_done(self):
        """Every ended release has its notification rows (the notify worker has read its
        `results` message) and none is still to be sent."""
        names = ",".join(f"'{s}'" for s in self.all_services())
        terminal = ",".join(f"'{s}'" for s in sorted(TERMINAL))
        rows = self.h.psql("SELECT count(*) FILTER (WHERE n.state IN ('pending', 'sending')),"
                           " count(*) FROM notifications n JOIN releases r ON r.id = n.release_id"
                           f" WHERE r.service IN ({names})")
        unread = self.h.psql("SELECT count(*) FROM releases r WHERE r.service IN"
                             f" ({names}) AND r.status IN ({terminal}) AND NOT EXISTS"
                             " (SELECT 1 FROM notifications n WHERE n.release_id = r.id)")
        return rows and rows[0][0] == "0" and unread and unread[0][0] == "0"

    # -- the checks ---------------------------------------------------------------------
    def check(self):
        h, f = self.h, self.figures
        names = ",".join(f"'{s}'" for s in self.all_services())
        rows = self.releases_rows()
        status = {r[0]: r[2] for r in rows}
        service_of = {r[0]: r[1] for r in rows}
        f["releases"] = len(status)
        f["published"] = len(self.release_ids)
        f["publish_retries"] = self.publish_failures
        f["kills"] = self.faults["kill"]
        if self.ha:
            for kind in FAILOVERS:
                f[kind.replace("-", "_") + "s"] = self.faults[kind]
        f["faults"] = sum(self.faults.values())
        f["faults_by_kind"] = dict(self.faults)
        f["statuses"] = dict(collections.Counter(status.values()))

        # Lost: published and never recorded, or recorded and never ended.
        lost = [i for i in self.release_ids if i not in status]
        lost += [i for i, s in status.items() if s not in TERMINAL]
        f["lost"] = len(lost)
        if lost:
            self.violations.append(f"lost releases (not ended): "
                                   f"{[(i, status.get(i)) for i in lost][:10]}")
        # Acknowledged: relctl's produce was acknowledged (acks=all); after every failover the
        # release must exist (on the HA stack its row was committed on the synchronous standby
        # too, so a promoted standby has it).
        unknown = [i for i in self.release_ids if i not in status]
        f["acknowledged_missing"] = len(unknown)
        if unknown:
            self.violations.append(f"acknowledged releases that do not exist: {unknown[:10]}")
        if self.ha:
            f["failover_command_errors"] = len(self.failover_errors)
            f["failover_delay"] = self.failover_cost()

        # Exactly one terminal event per release, and intervals that never overlap.
        events = h.psql("SELECT t.release_id, t.event, t.at FROM timeline t JOIN releases r ON"
                        f" r.id = t.release_id WHERE r.service IN ({names}) ORDER BY t.id")
        ends = collections.defaultdict(list)
        starts = {}
        for rid, event, at in events:
            if event in TERMINAL:
                ends[rid].append(parse_ts(at))
            elif event == "rendering" and rid not in starts:
                starts[rid] = parse_ts(at)
        twice = [i for i in status if len(ends[i]) > 1]
        f["terminal_twice"] = len(twice)
        if twice:
            self.violations.append(f"releases with more than one terminal event: {twice[:10]}")
        overlaps = 0
        by_service = collections.defaultdict(list)
        for rid, t0 in starts.items():
            if ends[rid]:
                by_service[service_of[rid]].append((t0, ends[rid][0], rid))
        for svc, spans in by_service.items():
            spans.sort()
            for (a0, a1, ra), (b0, b1, rb) in zip(spans, spans[1:]):
                if b0 < a1:
                    overlaps += 1
                    self.violations.append(f"timeline overlap on {svc}: {ra} until {a1}, "
                                           f"{rb} from {b0}")

        # kubesim's own record: per Deployment, the fences of the writes never go backwards.
        applies = json.loads(subprocess.run(
            ["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "get", "--raw",
             "/kubesim/applies"], capture_output=True, text=True, timeout=60, check=True).stdout)
        last = {}
        fence_backwards = 0
        writes = 0
        for a in applies:
            if a.get("name") not in self.all_services() or "fence" not in a:
                continue
            writes += 1
            key = (a["namespace"], a["name"])
            fence = int(a["fence"])
            if key in last and fence < last[key][0]:
                fence_backwards += 1
                self.violations.append(f"kubesim: {key} written by fence {fence} "
                                       f"({a.get('release')}) after fence {last[key][0]} "
                                       f"({last[key][1]})")
            if key not in last or fence >= last[key][0]:
                last[key] = (fence, a.get("release"))
        f["deployment_writes"] = writes
        # The stale-apply scenario: the superseded release never wrote after its successor.
        late = 0
        for old, new in self.stale:
            order = [a.get("release") for a in applies if a.get("release") in (old, new)]
            if new in order and old in order[order.index(new):]:
                late += 1
                self.violations.append(f"superseded release {old} applied after {new}")
        f["stale_scenarios"] = sum(1 for _, new in self.stale if new)
        f["stale_late_writes"] = late
        f["overlaps"] = overlaps + fence_backwards
        f["stale_applies_refused"] = self.count_logs(
            r"stopped: .*(no longer holds fence|written by newer fence|lost fence)")

        # results: every ended release has its message; copies only byte-identical.
        results = h.consume("results", timeout=60)
        copies = collections.defaultdict(list)
        for m in results:
            body = m.json()
            if body.get("release_id") in status:
                copies[body["release_id"]].append(m.value)
        missing = [i for i, s in status.items() if s in TERMINAL and not copies[i]]
        f["results_missing"] = len(missing)
        if missing:
            self.violations.append(f"releases without a results message: {missing[:10]}")
        f["results_duplicates"] = sum(len(v) - 1 for v in copies.values() if v)
        differing = [i for i, v in copies.items() if len(set(v)) > 1]
        if differing:
            self.violations.append(f"results copies that differ: {differing[:10]}")
        wrong = [i for i, v in copies.items() if v and json.loads(v[0])["status"] != status[i]]
        if wrong:
            self.violations.append(f"results status differs from the record: {wrong[:10]}")
        event_of = {json.loads(v[0]).get("event_id"): i for i, v in copies.items() if v}

        # Notifications: every release notified; twice only inside a crash window.
        if "notify" in self.stages:
            got = self.receiver.snapshot()
            notified = {event_of[e] for e in got if e in event_of}
            unnotified = [i for i in status if copies[i] and i not in notified]
            f["notifications"] = sum(len(v) for v in got.values())
            f["notifications_missing"] = len(unnotified)
            if unnotified:
                self.violations.append(f"releases never notified: {unnotified[:10]}")
            dup_in, dup_out = 0, 0
            for event, times in got.items():
                for first, again in zip(times, times[1:]):
                    if any(first - 1.0 <= c <= again for c in self.notify_crashes):
                        dup_in += 1
                    else:
                        dup_out += 1
                        self.violations.append(f"notification {event} delivered twice outside "
                                               "a crash window")
            f["notification_duplicates"] = dup_in + dup_out
            f["notification_duplicates_outside_crash"] = dup_out

        # Dead letters of our releases' messages (should be none: nothing here is invalid).
        f["dead_letters"] = int(h.psql("SELECT count(*) FROM rejected_messages WHERE"
                                       " encode(key, 'escape') LIKE ANY (ARRAY["
                                       + ",".join(f"'%/{s}'" for s in self.all_services())
                                       + "])")[0][0])
        if f["dead_letters"]:
            self.violations.append(f"{f['dead_letters']} messages of the run were dead-lettered")

        # Every worker alive, as many per stage as at the start.
        rows = self.workers()
        dead = [r for r in rows if not r[3]]
        per_stage = collections.Counter(r[0] for r in rows if r[3])
        f["workers_alive"] = sum(per_stage.values())
        f["workers_dead"] = len(dead)
        if dead:
            self.violations.append(f"dead workers at the end: {dead}")
        short = {s: per_stage[s] for s in self.stages if per_stage[s] < 2}
        if short:
            self.violations.append(f"stages with fewer than 2 live workers: {short}")
        _, status_rc = self.stack.status()
        if status_rc != 0:
            self.violations.append("ops/stack status reports a dead component")
        f["violations"] = len(self.violations)

    def failover_cost(self):
        """The cost of a failover: the extra delay it adds to the releases in flight.

        A release's latency is its finished_at (PostgreSQL's clock) minus the moment relctl
        acknowledged its request (this machine's clock; the same host), counted only for
        releases that succeeded and waited for no earlier release of their service (the one
        before it ended before it was acknowledged): queueing and bad images are not delay;
        nor is the first release, which waits for the consumer groups to start.
        The baseline is the median latency of those that met no fault: no fault's window
        [its start, its end + FAULT_TAIL_S] meets their [acknowledged, finished]. A release is
        in flight during a failover when its [acknowledged, finished] meets the failover's
        window (from the start to the end of ops/stack failover: for Redis until the old
        master is a replica again, for PostgreSQL until the old primary is the synchronous
        standby again); its extra delay is its latency minus the baseline. Figures: p50 and p99 (nearest rank) of the extra delay in ms per kind of
        failover and over all, with how many releases each has; in --json also each measured
        release's span and each fault's window (time.time() seconds). The figures count the
        releases in flight during a failover that met no other fault (its tail included);
        those that met others too are counted apart (with_other_faults): a release held up
        by a kill and a freeze beside a failover does not say what the failover cost.
        Also in --json: the five slowest measured releases with their timelines."""
        names = ",".join(f"'{s}'" for s in self.all_services())
        rows = self.h.psql("SELECT id, service, status, finished_at FROM releases WHERE service"
                           f" IN ({names}) ORDER BY created_at")
        spans = []
        previous_end = {}
        for rid, svc, status, finished in rows:
            end = parse_ts(finished).timestamp() if finished else None
            ack = self.acked_at.get(rid)
            before = previous_end.get(svc)
            if end is not None:
                previous_end[svc] = max(end, before or end)
            if status != "succeeded" or ack is None or end is None or rid == self.warmup:
                continue
            if before is not None and before > ack:
                continue  # it waited for the release before it
            spans.append((ack, end, rid))
        quiet = [b - a for a, b, _ in spans
                 if not any(w0 <= b and a <= w1 + FAULT_TAIL_S for w0, w1, _ in self.windows)]
        out = {"definition": "latency = finished_at - relctl acknowledged, releases that "
                             "succeeded without queueing; extra = latency - median latency of "
                             "those that met no fault; in flight = acknowledged before "
                             "ops/stack failover ended and finished after it began, and met "
                             "no other fault (those that did: with other faults)",
               "measured_releases": len(spans), "baseline_releases": len(quiet),
               "spans": {rid: (round(a, 3), round(b, 3)) for a, b, rid in spans},
               "windows": [(round(w0, 3), round(w1, 3), k) for w0, w1, k in self.windows]}
        if not quiet:
            return out
        base = sorted(quiet)[len(quiet) // 2]
        out["baseline_median_ms"] = round(base * 1000)

        def pct(values, p):
            values = sorted(values)
            return round(values[max(0, math.ceil(p / 100 * len(values)) - 1)] * 1000)
        def figures(extra):
            got = {"releases": len(extra)}
            if extra:
                got.update(p50_ms=pct(extra, 50), p99_ms=pct(extra, 99))
            return got

        def met(a, b):
            """The kinds of fault whose window (with its tail) meets [a, b]."""
            return {k for w0, w1, k in self.windows if w0 <= b and a <= w1 + FAULT_TAIL_S}
        every, every_mixed = [], []
        for kind in FAILOVERS:
            mine = [(w0, w1) for w0, w1, k in self.windows if k == kind]
            inflight = [(a, b) for a, b, _ in spans if any(w0 <= b and a <= w1 for w0, w1 in mine)]
            only = [(b - a) - base for a, b in inflight if met(a, b) == {kind}]
            mixed = [(b - a) - base for a, b in inflight if met(a, b) != {kind}]
            every += only
            every_mixed += mixed
            out[kind] = figures(only)
            out[kind]["with_other_faults"] = figures(mixed)
        out["all"] = figures(every)
        out["all"]["with_other_faults"] = figures(every_mixed)
        # The slowest measured releases with their timelines, for whoever wonders why.
        slow = sorted(spans, key=lambda s: s[0] - s[1])[:5]
        out["slowest"] = []
        for a, b, rid in slow:
            if b - a < base + 2.0:
                break
            events = self.h.psql("SELECT event, at, left(message, 120) FROM timeline WHERE"
                                 f" release_id = '{rid}' ORDER BY id")
            out["slowest"].append({"release": rid, "latency_ms": round((b - a) * 1000),
                                   "acknowledged": round(a, 3), "faults_met": sorted(met(a, b)),
                                   "timeline": events})
        return out

    def count_logs(self, pattern):
        rx = re.compile(pattern)
        n = 0
        for path in (self.stack.state_dir / "logs").glob("*.log"):
            try:
                n += sum(1 for line in path.open(errors="replace") if rx.search(line))
            except OSError:
                pass
        return n


def format_figures(f):
    keys = ["releases", "published", "kills", "redis_failovers", "postgres_failovers",
            "kafka_failovers", "failover_command_errors", "faults", "lost", "acknowledged_missing", "overlaps",
            "terminal_twice",
            "results_missing", "results_duplicates", "notifications", "notifications_missing",
            "notification_duplicates", "notification_duplicates_outside_crash",
            "stale_scenarios", "stale_late_writes", "stale_applies_refused",
            "deployment_writes", "dead_letters", "workers_alive", "workers_dead",
            "publish_retries", "violations", "seconds"]
    lines = [f"  {k:40s} {f[k]}" for k in keys if k in f]
    cost = f.get("failover_delay")
    if cost:
        lines.append(f"  {'failover extra delay':40s} baseline: median latency "
                     f"{cost.get('baseline_median_ms', '-')} ms of "
                     f"{cost['baseline_releases']} releases that met no fault (of "
                     f"{cost['measured_releases']} measured)")
        for kind in FAILOVERS + ("all",):
            c = cost.get(kind, {})
            m = c.get("with_other_faults", {})
            lines.append(f"    {kind:38s} p50 {c.get('p50_ms', '-')} ms, p99 "
                         f"{c.get('p99_ms', '-')} ms over {c.get('releases', 0)} releases "
                         f"in flight (with other faults too: p50 {m.get('p50_ms', '-')} ms, "
                         f"p99 {m.get('p99_ms', '-')} ms over {m.get('releases', 0)})")
        lines.append(f"    ({cost['definition']})")
    lines.append(f"  {'faults_by_kind':40s} {json.dumps(f.get('faults_by_kind', {}))}")
    lines.append(f"  {'statuses':40s} {json.dumps(f.get('statuses', {}))}")
    return "\n".join(lines)


def start_stack(extra_env=None, ha=False):
    env = dict(STACK_ENV)
    env.update(extra_env or {})
    return Stack(extra_env=env, ha=ha).up()


__all__ = ["Chaos", "FAILOVERS", "FAULTS", "HA_FAULTS", "STACK_ENV", "format_figures",
           "start_stack", "pid_alive"]
