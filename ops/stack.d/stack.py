"""ops/stack: the local stack (PostgreSQL, Redis, dev broker, kubesim, workers); see ops/stack."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRY = os.path.join(REPO, "ops", "stack")
# What `ops/stack env` prints, in this order (stack.env).
ENV_NAMES = ("RELFLEET_STATE_DIR", "RELFLEET_KAFKA_BROKERS", "RELFLEET_TOPIC_PREFIX",
             "RELFLEET_PG_DSN", "RELFLEET_REDIS_URL", "RELFLEET_KUBECONFIG",
             "RELFLEET_SECRETS_FILE", "RELFLEET_TOKEN", "RELFLEET_BROKER_CTL", "RELFLEET_API_URL",
             "RELFLEET_KAFKA_FETCH_WAIT_MS", "RELFLEET_PROMETHEUS_URL")


class Die(Exception):
    """A fatal error: printed as `ops/stack: <message>`, exit status 1."""


def die(msg):
    raise Die(msg)


def say(msg):
    print(f"ops/stack: {msg}", flush=True)


def warn(msg):
    print(f"ops/stack: {msg}", file=sys.stderr, flush=True)


def _logical_cwd():
    """The working folder as the shell names it ($PWD when it is this folder)."""
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, "."):
            return pwd
    except OSError:
        pass
    return os.getcwd()


STATE = os.environ.get("RELFLEET_STATE_DIR") or os.path.join(REPO, ".run")
BUILD = os.environ.get("RELFLEET_BUILD_DIR") or os.path.join(REPO, "build")
if not BUILD.startswith("/"):
    BUILD = _logical_cwd() + "/" + BUILD
BIN = BUILD + "/bin"


def _env_int(name, default):
    value = os.environ.get(name) or str(default)
    try:
        return int(value)
    except ValueError:
        die(f"bad {name} '{value}' (a whole number of seconds)")


PIDS = LOGS = None


def state_init(create=False):
    """Makes STATE absolute (creating it when create) and sets PIDS and LOGS."""
    global STATE, PIDS, LOGS
    if create:
        os.makedirs(STATE, exist_ok=True)
    if os.path.isdir(STATE):
        STATE = os.path.normpath(os.path.join(_logical_cwd(), STATE))
    PIDS = STATE + "/pids"
    LOGS = STATE + "/logs"


def shell_quote(value):
    """The value as bash's printf %q writes it (stack.env is sourced by shells)."""
    if value == "":
        return "''"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        out = []
        for c in value:
            if c in "\\'":
                out.append("\\" + c)
            elif ord(c) < 32 or ord(c) == 127:
                named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b",
                         "\f": "\\f", "\v": "\\v", "\x1b": "\\E"}
                out.append(named.get(c, "\\%03o" % ord(c)))
            else:
                out.append(c)
        return "$'" + "".join(out) + "'"
    out = []
    for i, c in enumerate(value):
        if c in " !\"$&'()*,;<>?[\\]^`{|}\t" or (i == 0 and c in "#~"):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def random_hex():
    """Random hex, for passwords and tokens."""
    return os.urandom(24).hex()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(seconds, what, pred, quiet=False):
    """Polls pred until it is true (returns True) or the deadline passes (False)."""
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() >= deadline:
            if not quiet:
                warn(f"timed out after {seconds}s waiting for {what}")
            return False
        time.sleep(0.1)
    return True


def pid_alive(pid):
    """Alive = exists and is not a zombie (an orphan stays one until init reaps it)."""
    if not pid or pid == "-":
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def pidfile_read(path):
    """The pid a pid file names (its first line's digits), "-" when there is none."""
    try:
        with open(path) as f:
            line = f.readline()
    except OSError:
        line = ""
    return re.sub(r"[^0-9]", "", line) or "-"


def pidfile_live(path, match):
    """(pid, alive): alive when the process lives and its command line still contains match
    (a pid file left by a crash may name a pid reused since)."""
    pid = pidfile_read(path)
    if not pid_alive(pid):
        return pid, False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return pid, False
    if args and args[-1] == "":
        args.pop()
    return pid, match in " " + " ".join(args) + " "


def read_first_line(path, default=""):
    try:
        with open(path) as f:
            return f.readline().rstrip("\n")
    except OSError:
        return default


def write_private(path, text):
    """Writes a file only its owner can read (umask 077), through a rename."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def spawn(pidfile, log, cmd, env=None):
    """Starts a command detached from this process (own session, stdin from /dev/null,
    output appended to a log) and writes its pid file."""
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        except OSError as e:
            die(f"cannot start '{cmd[0]}': {e.strerror}")
    # The child outlives this process and nobody here waits for it: no Popen bookkeeping
    # (it would keep the object for reaping) and no "still running" warning.
    proc.returncode = 0
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{proc.pid}\n")
    os.replace(pidfile + ".tmp", pidfile)
    return proc.pid


def stop_pid(pid, what):
    """Stops one process: SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""
    if not pid_alive(pid):
        return
    try:
        os.kill(int(pid), signal.SIGTERM)
    except OSError:
        pass
    if not wait_until(STOP_TIMEOUT, f"{what} (pid {pid}) to exit", lambda: not pid_alive(pid)):
        warn(f"killing {what} (pid {pid})")
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
        wait_until(5, f"{what} (pid {pid}) to die", lambda: not pid_alive(pid))


def run(cmd, **kw):
    """subprocess.run, with a missing program as a clear error."""
    try:
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(cmd, **kw)
    except FileNotFoundError:
        die(f"cannot run '{cmd[0]}': not found")


def as_pg(cmd):
    """The command, run as the user that owns PostgreSQL's files."""
    return ["runuser", "-u", "relfleet", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def _version_key(path):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def pg_bindir():
    if os.environ.get("RELFLEET_PG_BINDIR"):
        return os.environ["RELFLEET_PG_BINDIR"]
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if os.access(d + "/initdb", os.X_OK) and os.access(d + "/pg_ctl", os.X_OK):
            return d
    die("cannot find PostgreSQL's initdb (run ops/bootstrap, or set RELFLEET_PG_BINDIR)")


def tail(path, n=20):
    """The last n lines of a file, to stderr."""
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError:
        return
    sys.stderr.write("".join(lines))
    sys.stderr.flush()


def add_component(name, pidfile, match, addr):
    with open(STATE + "/components", "a") as f:
        f.write(f"{name}|{pidfile}|{match}|{addr}\n")


def components():
    """[(name, pidfile, match, addr)] of the components file, in order of start."""
    rows = []
    try:
        with open(STATE + "/components") as f:
            for line in f:
                parts = line.rstrip("\n").split("|", 3)
                if len(parts) == 4:
                    rows.append(tuple(parts))
    except OSError:
        pass
    return rows


def redis_ping(port, host="127.0.0.1"):
    """True when a Redis on host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, int(port)), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Components. Each start_* sets (in os.environ, so the workers get them) what it provides.

def pg_start_server(data, port, log):
    """pg_ctl start on a port; True when it came up."""
    proc = run(as_pg([pg_bindir() + "/pg_ctl", "-D", data, "-l", log, "-w", "-t",
                      str(START_TIMEOUT), "-o", f"-p {port}", "start"]),
               stdout=subprocess.DEVNULL)
    return proc.returncode == 0


def pg_user_can_enter():
    if os.geteuid() != 0:
        return
    if run(["getent", "passwd", "relfleet"], stdout=subprocess.DEVNULL).returncode != 0:
        die("user relfleet is missing: run ops/bootstrap")
    # The server runs as relfleet: it must be able to reach its folder.
    os.chmod(STATE, os.stat(STATE).st_mode | 0o001)
    if run(["runuser", "-u", "relfleet", "--", "test", "-x", STATE]).returncode != 0:
        die(f"user relfleet cannot enter '{STATE}' (a parent folder is closed to others)")


def chown_pg(*paths):
    if os.geteuid() == 0:
        for p in paths:
            shutil.chown(p, "relfleet", "relfleet")


def pg_password():
    path = STATE + "/pg.password"
    if not os.path.isfile(path):
        write_private(path, random_hex() + "\n")
    return read_first_line(path)


def pg_initdb(data, pwfile_dir, password, conf_lines):
    """initdb of a fresh data folder with the relfleet user and password, then conf_lines
    appended to its postgresql.conf."""
    shutil.rmtree(data, ignore_errors=True)
    # initdb reads the password from a file only the server's user can read.
    pwfile = pwfile_dir + "/pwfile"
    write_private(pwfile, password + "\n")
    chown_pg(pwfile)
    try:
        with open(LOGS + "/initdb.log", "w") as log:
            proc = run(as_pg([pg_bindir() + "/initdb", "-D", data, "--username=relfleet",
                              f"--pwfile={pwfile}", "--auth-local=trust",
                              "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale",
                              "--no-sync"]), stdout=log, stderr=subprocess.STDOUT)
    finally:
        os.unlink(pwfile)
    if proc.returncode != 0:
        with open(LOGS + "/initdb.log", errors="replace") as f:
            sys.stderr.write(f.read())
        die("initdb failed")
    with open(data + "/postgresql.conf", "a") as f:
        f.write("".join(line + "\n" for line in conf_lines))


def psql_socket(sockdir, port, sql, db="postgres"):
    """Runs one statement over the unix socket (trust); returns its unaligned output."""
    proc = run(["psql", "-h", sockdir, "-p", str(port), "-U", "relfleet", "-d", db, "-Atq",
                "-c", sql], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"psql on port {port} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def pg_create_database(sockdir, port):
    if not psql_socket(sockdir, port,
                       "SELECT 1 FROM pg_database WHERE datname = 'relfleet'"):
        psql_socket(sockdir, port, "CREATE DATABASE relfleet")


def start_postgres():
    data = STATE + "/pg/data"
    sockdir = STATE + "/pg/run"
    log = LOGS + "/postgres.log"
    pg_user_can_enter()
    if len(sockdir) > 90:
        die(f"state folder path too long for a unix socket: '{STATE}'")
    os.makedirs(sockdir, exist_ok=True)
    open(log, "a").close()
    password = pg_password()
    chown_pg(STATE + "/pg", sockdir, log)
    if not os.path.isfile(data + "/PG_VERSION"):
        pg_initdb(data, STATE + "/pg", password, [
            "# relfleet local stack: throwaway data, so speed over durability",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{sockdir}'",
            "max_connections = 200",
        ])
    for attempt in (1, 2, 3):
        port = free_port()
        if pg_start_server(data, port, log):
            break
        if attempt == 3:
            tail(log)
            die(f"PostgreSQL did not start (log: {log})")
    pg_create_database(sockdir, port)
    write_private(STATE + "/pgpass", f"127.0.0.1:{port}:*:relfleet:{password}\n")
    add_component("postgres", data + "/postmaster.pid", "postgres", f"127.0.0.1:{port}")
    os.environ["RELFLEET_PG_DSN"] = f"postgresql://relfleet:{password}@127.0.0.1:{port}/relfleet"
    os.environ["PGPASSFILE"] = STATE + "/pgpass"


def redis_conf(port, pidfile, logfile):
    return (f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {STATE}/redis\n"
            f"daemonize yes\npidfile {pidfile}\nlogfile {logfile}\n")


def redis_server_start(port, pidfile, logfile):
    """redis-server reading its settings from stdin ("-"): no daemon of ours keeps a
    terminal."""
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    with open(logfile, "ab") as log:
        run(["redis-server", "-"], input=redis_conf(port, pidfile, logfile).encode(),
            stdout=log, stderr=subprocess.STDOUT)


def start_redis():
    os.makedirs(STATE + "/redis", exist_ok=True)
    pidfile = STATE + "/redis/redis.pid"
    log = LOGS + "/redis.log"
    for attempt in (1, 2, 3):
        port = free_port()
        redis_server_start(port, pidfile, log)
        if wait_until(10, f"redis on port {port}", lambda: redis_ping(port)):
            break
        if attempt == 3:
            tail(log)
            die(f"Redis did not start (log: {log})")
    if not wait_until(5, "redis pid file", lambda: os.path.getsize(pidfile) > 0
                      if os.path.exists(pidfile) else False):
        die("Redis wrote no pid file")
    add_component("redis", pidfile, "redis-server", f"127.0.0.1:{port}")
    os.environ["RELFLEET_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"


def file_or_dead(path, pid):
    """True once the file has content or the process is gone (then the caller reports it)."""
    return (os.path.exists(path) and os.path.getsize(path) > 0) or not pid_alive(pid)


def has_content(path):
    return os.path.exists(path) and os.path.getsize(path) > 0


def spawn_and_wait(name, pidfile, log, cmd, addr_file, what, env=None):
    """Spawns a server that writes its address to addr_file; dies with its log's tail when
    the file does not come."""
    pid = spawn(pidfile, log, cmd, env=env)
    if not wait_until(START_TIMEOUT, what, lambda: file_or_dead(addr_file, pid)) or \
            not has_content(addr_file):
        tail(log)
        die(f"{name} did not start (log: {log})")
    return read_first_line(addr_file)


def start_broker(brokers=None):
    exe = BIN + "/relfleet-devbroker"
    if not os.access(exe, os.X_OK):
        die(f"'{exe}' not built (cmake -S . -B build && cmake --build build)")
    for name in ("broker.addr", "broker.ctl"):
        try:
            os.unlink(f"{STATE}/{name}")
        except FileNotFoundError:
            pass
    cmd = [exe, "--state-dir", STATE, "--partitions",
           os.environ.get("RELFLEET_STACK_PARTITIONS") or "6",
           "--topic-prefix", os.environ["RELFLEET_TOPIC_PREFIX"]]
    if brokers:
        cmd += ["--brokers", str(brokers)]
    addr = spawn_and_wait("the dev broker", PIDS + "/devbroker.pid", LOGS + "/devbroker.log",
                          cmd, STATE + "/broker.addr", "the dev broker's address")
    os.environ["RELFLEET_KAFKA_BROKERS"] = addr
    os.environ["RELFLEET_BROKER_CTL"] = read_first_line(STATE + "/broker.ctl")
    # The dev broker (librdkafka's mock cluster) answers a fetch of an empty partition only
    # after fetch.wait.max.ms, even when a message arrives meanwhile; a Kafka broker
    # answers at once. Without this, every hop between stages would wait ~250 ms.
    os.environ["RELFLEET_KAFKA_FETCH_WAIT_MS"] = os.environ.get("RELFLEET_KAFKA_FETCH_WAIT_MS") \
        or "5"
    add_component("devbroker", PIDS + "/devbroker.pid", "relfleet-devbroker", addr)


def start_kubesim():
    exe = BIN + "/kubesim"
    d = STATE + "/kubesim"
    if not os.access(exe, os.X_OK):
        return
    os.makedirs(d, exist_ok=True)
    if not has_content(d + "/token"):
        write_private(d + "/token", random_hex() + "\n")
    try:
        os.unlink(d + "/kubesim.addr")
    except FileNotFoundError:
        pass
    args = [exe, "--state-dir", d, "--tls", "--token-file", d + "/token",
            "--time-scale", os.environ.get("RELFLEET_KUBESIM_TIME_SCALE") or "1",
            "--log-level", os.environ.get("RELFLEET_KUBESIM_LOG_LEVEL") or "info"]
    if os.environ.get("RELFLEET_KUBESIM_RULES"):
        args += ["--rules", os.environ["RELFLEET_KUBESIM_RULES"]]
    elif os.path.isfile(REPO + "/ops/kubesim/rules.yaml"):
        args += ["--rules", REPO + "/ops/kubesim/rules.yaml"]
    addr = spawn_and_wait("kubesim", PIDS + "/kubesim.pid", LOGS + "/kubesim.log", args,
                          d + "/kubesim.addr", "kubesim's address")
    add_component("kubesim", PIDS + "/kubesim.pid", "kubesim", addr)
    os.environ["RELFLEET_KUBECONFIG"] = d + "/kubeconfig"


def start_api():
    """The HTTP API and web console (relfleet-api), when built: a free port it picks itself
    and writes to api.addr, so no other process can take it in between."""
    exe = BIN + "/relfleet-api"
    if not os.access(exe, os.X_OK):
        return
    try:
        os.unlink(STATE + "/api.addr")
    except FileNotFoundError:
        pass
    addr = spawn_and_wait("relfleet-api", PIDS + "/api.pid", LOGS + "/api.log",
                          [exe, "--listen", "127.0.0.1:0", "--addr-file", STATE + "/api.addr"],
                          STATE + "/api.addr", "the API's address")
    add_component("api", PIDS + "/api.pid", "relfleet-api", addr)
    os.environ["RELFLEET_API_URL"] = "http://" + addr


# ---------------------------------------------------------------------------------------
# Prometheus (Debian's): scrapes every worker and relfleet-api, which it finds through the
# target files in prometheus/targets/ (file-based service discovery): write_targets keeps
# stack.json there current as workers start and stop; any other *.json there is scraped too.

def prometheus_wanted():
    value = os.environ.get("RELFLEET_STACK_PROMETHEUS") or "on"
    if value not in ("on", "off"):
        die(f"bad RELFLEET_STACK_PROMETHEUS '{value}' (on or off)")
    return value == "on"


def prometheus_conf(d):
    """prometheus.yml: one job over the target files, the alert rules of ops/prometheus."""
    interval = os.environ.get("RELFLEET_STACK_SCRAPE_INTERVAL") or "1s"
    if not re.fullmatch(r"[0-9]+(ms|s|m)", interval):
        die(f"bad RELFLEET_STACK_SCRAPE_INTERVAL '{interval}' (a duration such as 1s or 500ms)")
    rules = REPO + "/ops/prometheus/relfleet.rules.yaml"
    # JSON strings are YAML strings: paths need no further quoting.
    lines = ["global:", f"  scrape_interval: {interval}", f"  scrape_timeout: {interval}",
             f"  evaluation_interval: {interval}"]
    if os.path.isfile(rules):
        lines += ["rule_files:", f"  - {json.dumps(rules)}"]
    lines += ["scrape_configs:", "  - job_name: relfleet",
              # the workers' own stage label and the target's are the same; keep theirs
              "    honor_labels: true", "    file_sd_configs:",
              f"      - files: [{json.dumps(d + '/targets/*.json')}]"]
    with open(d + "/prometheus.yml", "w") as f:
        f.write("\n".join(lines) + "\n")


def prometheus_spawn():
    """Starts Prometheus on a free port without waiting for it (prometheus_wait does), so it
    comes up while the other servers do; returns its address."""
    d = STATE + "/prometheus"
    exe = shutil.which("prometheus")
    if not exe:
        die("cannot find prometheus (run ops/bootstrap, or RELFLEET_STACK_PROMETHEUS=off)")
    shutil.rmtree(d + "/targets", ignore_errors=True)
    os.makedirs(d + "/targets", exist_ok=True)
    prometheus_conf(d)
    addr = f"127.0.0.1:{free_port()}"
    spawn(PIDS + "/prometheus.pid", LOGS + "/prometheus.log",
          [exe, "--config.file=" + d + "/prometheus.yml", "--storage.tsdb.path=" + d + "/data",
           "--storage.tsdb.retention.time=" +
           (os.environ.get("RELFLEET_STACK_PROMETHEUS_RETENTION") or "2h"),
           "--web.listen-address=" + addr, "--log.level=warn"])
    # In the components file at once, so that a failed up stops it too; a second start
    # (on another port) replaces its row.
    rows = [r for r in components() if r[0] != "prometheus"]
    with open(STATE + "/components", "w") as f:
        f.write("".join("|".join(r) + "\n" for r in rows))
    add_component("prometheus", PIDS + "/prometheus.pid", "prometheus", addr)
    return addr


def prometheus_ready(addr):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{addr}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_prometheus_wait(addr):
    """Waits for the Prometheus prometheus_spawn started to be ready (/-/ready); one that
    died at once (its port taken meanwhile) is started again on another port."""
    pidfile = PIDS + "/prometheus.pid"
    for attempt in (1, 2, 3):
        pid = pidfile_read(pidfile)
        if wait_until(START_TIMEOUT, f"prometheus on {addr}",
                      lambda: prometheus_ready(addr) or not pid_alive(pid)) and pid_alive(pid):
            break
        if attempt == 3 or pid_alive(pid):
            tail(LOGS + "/prometheus.log")
            die(f"Prometheus did not start (log: {LOGS}/prometheus.log)")
        addr = prometheus_spawn()
    os.environ["RELFLEET_PROMETHEUS_URL"] = "http://" + addr
    write_targets()


def write_targets():
    """prometheus/targets/stack.json: relfleet-api and every worker with a pid file (a dead
    one stays until it is killed or the stack goes down: `up` says it is down)."""
    d = STATE + "/prometheus/targets"
    if not os.path.isdir(d):
        return
    groups = [{"targets": [addr], "labels": {"stage": "api", "instance": "api"}}
              for name, _pidfile, _match, addr in components() if name == "api"]
    for f in worker_pidfiles():
        stage, n = worker_name(f)
        addr = read_first_line(f[:-len(".pid")] + ".addr")
        if addr:
            groups.append({"targets": [addr],
                           "labels": {"stage": stage, "instance": f"{stage}-{n}"}})
    with open(d + "/stack.json.tmp", "w") as f:
        json.dump(groups, f, indent=1)
    os.replace(d + "/stack.json.tmp", d + "/stack.json")


def migrate():
    if not os.access(BIN + "/relctl", os.X_OK):
        return
    with open(LOGS + "/migrate.log", "ab") as log:
        proc = run([BIN + "/relctl", "db", "migrate"], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail(LOGS + "/migrate.log")
        die(f"relctl db migrate failed (log: {LOGS}/migrate.log)")


def write_secrets():
    path = STATE + "/secrets"
    if not has_content(path):
        write_private(path, f"admin_token={random_hex()}\n")
    # The bootstrap admin's request signing key (docs/permissions.md): relctl signs with it.
    admin = os.environ.get("RELFLEET_BOOTSTRAP_ADMIN") or "admin"
    with open(path) as f:
        text = f.read()
    if not re.search(r"^signing_key\." + re.escape(admin) + "=", text, re.M):
        with open(path, "a") as f:
            f.write(f"signing_key.{admin}={random_hex()}\n")
        text = open(path).read()
    os.chmod(path, 0o600)
    os.environ["RELFLEET_SECRETS_FILE"] = path
    token = next((line[len("admin_token="):] for line in text.splitlines()
                  if line.startswith("admin_token=")), "")
    os.environ["RELFLEET_TOKEN"] = token


def write_env():
    """The settings a client needs, as export lines (mode 600: they hold the secrets)."""
    lines = [f"export {name}={shell_quote(os.environ[name])}\n" for name in ENV_NAMES
             if os.environ.get(name)]
    write_private(STATE + "/stack.env", "".join(lines))


def read_env_file(path):
    """{name: value} of a stack.env (export lines as write_env writes them)."""
    import shlex
    env = {}
    with open(path) as f:
        for line in f:
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, value = words[1].split("=", 1)
                env[name] = value
    return env


def load_env():
    """Makes the stack's settings this process's, over whatever the caller had for the same
    keys (a caller may have eval'ed another stack's env); other RELFLEET_* pass through."""
    path = STATE + "/stack.env"
    if not os.path.isfile(path):
        die(f"no stack is up in '{STATE}' (ops/stack up)")
    os.environ.pop("RELFLEET_KUBECONFIG", None)
    os.environ.update(read_env_file(path))
    os.environ["PGPASSFILE"] = STATE + "/pgpass"


# ---------------------------------------------------------------------------------------
# Workers: pids/worker-<stage>-<n>.pid, logs/<stage>-<n>.log; n only grows.

def worker_stages():
    exe = BIN + "/relfleet-worker"
    if not os.access(exe, os.X_OK):
        return []
    wanted = (os.environ.get("RELFLEET_STACK_STAGES") or "render apply track notify").split()
    out = run([exe, "--list-stages"], capture_output=True, text=True)
    if out.returncode != 0:
        die(f"'{exe} --list-stages' failed: {out.stderr.strip()}")
    return [s.strip() for s in out.stdout.splitlines() if s.strip() and s.strip() in wanted]


def worker_start(stage):
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", stage):
        die(f"bad stage name '{stage}'")
    exe = BIN + "/relfleet-worker"
    if not os.access(exe, os.X_OK):
        die(f"'{exe}' not built")
    seq = f"{PIDS}/worker-{stage}.seq"
    n = int(read_first_line(seq, "0") or 0) + 1
    with open(seq, "w") as f:
        f.write(f"{n}\n")
    # Each worker serves /metrics, /healthz and /readyz on a port of its own: it binds port
    # 0 and writes the port it got to the .addr file, so no other process can take the port
    # between a choice here and the worker's bind (a CI run lost a bench stack's worker so).
    addr_file = f"{PIDS}/worker-{stage}-{n}.addr"
    env = dict(os.environ, RELFLEET_METRICS_ADDR="127.0.0.1:0",
               RELFLEET_METRICS_ADDR_FILE=addr_file)
    pid = spawn(f"{PIDS}/worker-{stage}-{n}.pid", f"{LOGS}/{stage}-{n}.log", [exe, stage],
                env=env)
    wait_until(START_TIMEOUT, f"worker {stage}-{n} to listen",
               lambda: os.path.isfile(addr_file) or not pid_alive(pid), quiet=True)
    write_targets()
    return f"{stage} {n} {pid}"


def worker_pidfiles(stage=""):
    """The pid files of one stage's workers (all stages when empty), oldest first."""
    files = glob.glob(f"{PIDS}/worker-{glob.escape(stage)}-*.pid" if stage
                      else f"{PIDS}/worker-*.pid")

    def key(path):
        n = path.rsplit("-", 1)[-1][:-len(".pid")]
        return (int(n) if n.isdigit() else 0, path)
    return sorted(files, key=key)


def worker_name(path):
    """(stage, n) of a worker's pid file."""
    base = os.path.basename(path)[len("worker-"):-len(".pid")]
    stage, _, n = base.rpartition("-")
    return stage, n


# ---------------------------------------------------------------------------------------
# Commands.

def cmd_up(args):
    if args not in ([], ["--ha"]):
        die("usage: ops/stack up [--ha]")
    state_init(create=True)
    if os.path.isfile(STATE + "/stack.env"):
        if status_rows()[1] == 0:
            say(f"already up in {STATE}")
            return 0
        die(f"the stack in '{STATE}' is partly down (ops/stack status); run ops/stack down first")
    for d in (PIDS, LOGS, PIDS + "/signalled"):
        os.makedirs(d, exist_ok=True)
    open(STATE + "/components", "w").close()
    try:
        if args:
            import ha
            with open(STATE + "/mode", "w") as f:
                f.write("ha\n")
            up_components(ha)
        else:
            up_components()
    except BaseException as e:
        if isinstance(e, Die):
            warn(str(e))
        warn("up failed; stopping what was started")
        quietly(cmd_down)
        if isinstance(e, Die):
            return 1
        raise
    lines, dead = status_rows()
    if dead:
        sys.stderr.write("".join(lines))
        # The tail of each dead one's log: callers (the bench, CI) often remove the folder.
        for line in lines:
            words = line.split()
            if words and words[-1] == "dead":
                sys.stderr.write(f"ops/stack: the end of {LOGS}/{words[0]}.log:\n")
                tail(f"{LOGS}/{words[0]}.log")
        quietly(cmd_down)
        die(f"a component died right after starting (logs in {LOGS})")
    sys.stdout.write("".join(lines))
    say(f"up in {STATE} (eval \"$(ops/stack env)\" for its settings)")
    if os.environ.get("RELFLEET_API_URL"):
        say(f"web console and API: {os.environ['RELFLEET_API_URL']} (log in with the token "
            "RELFLEET_TOKEN of ops/stack env)")
    return 0


def up_components(ha=None):
    """Starts every component: the replicated ones of ops/stack.d/ha.py when ha is given."""
    os.environ["RELFLEET_STATE_DIR"] = STATE
    os.environ["RELFLEET_TOPIC_PREFIX"] = os.environ.get("RELFLEET_TOPIC_PREFIX") or "relfleet."
    for name in ("RELFLEET_KUBECONFIG", "RELFLEET_PG_DSN", "RELFLEET_REDIS_URL",
                 "RELFLEET_KAFKA_BROKERS", "RELFLEET_BROKER_CTL", "RELFLEET_SECRETS_FILE",
                 "RELFLEET_TOKEN", "RELFLEET_API_URL", "RELFLEET_PROMETHEUS_URL"):
        os.environ.pop(name, None)
    write_secrets()
    # Prometheus comes up while the others do; it is waited for at the end.
    prometheus = prometheus_spawn() if prometheus_wanted() else None
    if ha:
        ha.start_postgres_ha()
        ha.start_redis_ha()
        start_broker(brokers=ha.NODES)
    else:
        start_postgres()
        start_redis()
        start_broker()
    start_kubesim()
    write_env()
    migrate()
    start_api()
    write_env()
    n = int(os.environ.get("RELFLEET_STACK_WORKERS_PER_STAGE") or ("2" if ha else "1"))
    for stage in worker_stages():
        for _ in range(n):
            worker_start(stage)
    if prometheus:
        start_prometheus_wait(prometheus)
        write_env()


def quietly(fn, *args):
    """Runs fn with its stdout and stderr thrown away; ignores its failure."""
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        fn(*args)
    except Exception:
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def pg_cleanup_crash(data=None):
    """After a crash of the postmaster: its children (they all work in the data folder) go,
    and so does its pid file, which would otherwise stop the next start."""
    data = data or STATE + "/pg/data"
    if not os.path.isfile(data + "/postmaster.pid"):
        return
    if pidfile_live(data + "/postmaster.pid", "postgres")[1]:
        return
    left = []
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            cwd = os.readlink(proc + "/cwd")
        except OSError:
            continue
        pid = proc[len("/proc/"):]
        if cwd == data and pid_alive(pid):
            left.append(pid)
    for pid in left:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    for pid in left:
        wait_until(5, f"postgres process {pid} to die", lambda: not pid_alive(pid))
    try:
        os.unlink(data + "/postmaster.pid")
    except FileNotFoundError:
        pass


def pg_stop(data, mode="fast"):
    """Stops the PostgreSQL of a data folder (pg_ctl -m mode); True when one was running."""
    pid, live = pidfile_live(data + "/postmaster.pid", "postgres")
    if live:
        proc = run(as_pg([pg_bindir() + "/pg_ctl", "-D", data, "-m", mode, "-w", "-t",
                          str(STOP_TIMEOUT), "stop"]), stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            stop_pid(pid, "postgres")
    pg_cleanup_crash(data)
    return live


def cmd_down():
    state_init()
    if not os.path.isdir(STATE):
        say(f"nothing to stop in {STATE}")
        return 0
    stopped = 0
    for f in worker_pidfiles() + sorted(glob.glob(PIDS + "/signalled/*.pid")):
        pid, live = pidfile_live(f, "relfleet-worker")
        if live:
            stop_pid(pid, "worker " + os.path.basename(f))
            stopped += 1
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
    for f in glob.glob(PIDS + "/worker-*.seq") + glob.glob(PIDS + "/worker-*.addr"):
        os.unlink(f)
    # Reverse order of start.
    for name, pidfile, match, _addr in reversed(components()):
        if match == "postgres":
            if pg_stop(os.path.dirname(pidfile)):
                stopped += 1
            continue
        pid, live = pidfile_live(pidfile, match)
        if live:
            stop_pid(pid, name)
            stopped += 1
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
    for name in ("components", "stack.env", "broker.addr", "broker.ctl", "pgpass", "api.addr",
                 "mode", "stopped"):
        try:
            os.unlink(f"{STATE}/{name}")
        except FileNotFoundError:
            pass
    say(f"down in {STATE} ({stopped} processes stopped)")
    return 0


def status_rows():
    """(lines, dead): one line per component and worker; dead is 1 when any is dead."""
    state_init()
    if not os.path.isfile(STATE + "/components"):
        return [f"no stack in {STATE}\n"], 1
    lines, dead = [], 0
    ha = None
    if os.path.isfile(STATE + "/mode"):
        import ha
        ha = ha if ha.is_ha() else None
    for name, pidfile, match, addr in components():
        pid, live = pidfile_live(pidfile, match)
        if ha:
            more, died = ha.status_lines(name, pid, addr, live)
            lines += more
            dead |= died
            continue
        dead |= not live
        lines.append("%-12s pid=%-8s %-24s %s\n" % (name, pid, addr, "alive" if live else "dead"))
    for f in worker_pidfiles():
        pid, live = pidfile_live(f, "relfleet-worker")
        dead |= not live
        addr = read_first_line(f[:-len(".pid")] + ".addr") or "-"
        base = os.path.basename(f)[len("worker-"):-len(".pid")]
        lines.append("%-12s pid=%-8s %-24s %s\n" % (base, pid, addr, "alive" if live else "dead"))
    return lines, int(dead)


def cmd_status():
    """Prints each component and worker; returns 1 when any is dead."""
    lines, dead = status_rows()
    sys.stdout.write("".join(lines))
    return dead


def cmd_env():
    state_init()
    if not os.path.isfile(STATE + "/stack.env"):
        die(f"no stack is up in '{STATE}' (ops/stack up)")
    with open(STATE + "/stack.env") as f:
        sys.stdout.write(f.read())
    # The build's bin first, once.
    path = (":" + os.environ.get("PATH", "") + ":").replace(":" + BIN + ":", ":")
    path = path[1:] if path.startswith(":") else path
    path = path[:-1] if path.endswith(":") else path
    print("export PATH=" + shell_quote(BIN + (":" + path if path else "")))
    return 0


def parse_signal(name):
    if name.isdigit():
        return int(name)
    upper = name.upper()
    sig = getattr(signal, upper if upper.startswith("SIG") else "SIG" + upper, None)
    if not isinstance(sig, signal.Signals):
        die(f"bad signal '{name}'")
    return sig


def cmd_worker(args):
    state_init()
    action = args[0] if args else ""
    if action == "start":
        if len(args) != 2:
            die("usage: ops/stack worker start STAGE")
        load_env()
        print(worker_start(args[1]))
        return 0
    if action == "kill":
        if len(args) not in (2, 3):
            die("usage: ops/stack worker kill STAGE [SIGNAL]")
        stage = args[1]
        signame = args[2] if len(args) == 3 else "KILL"
        sig = parse_signal(signame)
        files = worker_pidfiles(stage)
        if not files:
            die(f"no {stage} worker is running")
        f = files[0]
        pid = pidfile_read(f)
        base = os.path.basename(f)
        # Out of the live list; down still stops it if the signal did not.
        os.makedirs(PIDS + "/signalled", exist_ok=True)
        moved = f"{PIDS}/signalled/{base}"
        os.replace(f, moved)
        if pidfile_live(moved, "relfleet-worker")[1]:
            os.kill(int(pid), sig)
        if sig == signal.SIGKILL:
            os.unlink(moved)
        write_targets()
        print(f"{stage} {worker_name(f)[1]} {pid}")
        return 0
    if action == "list":
        for f in worker_pidfiles():
            stage, n = worker_name(f)
            pid, live = pidfile_live(f, "relfleet-worker")
            print(f"{stage} {n} {pid} {'alive' if live else 'dead'}")
        return 0
    die("usage: ops/stack worker start STAGE | kill STAGE [SIGNAL] | list")


def component_addr(name):
    """The address a component was started on (host:port), from the components file."""
    for row in components():
        if row[0] == name:
            return row[3]
    die(f"no component '{name}' in '{STATE}'")


def cmd_server(action, args):
    """Stops or starts Redis or PostgreSQL of a running stack, on the port it was started
    on, so that the workers (which keep their settings) reconnect to it: the outage tests."""
    state_init()
    if not os.path.isfile(STATE + "/components"):
        die(f"no stack in {STATE}")
    if read_first_line(STATE + "/mode") == "ha":
        die(f"the stack in '{STATE}' is an HA stack: ops/stack failover redis|postgres|kafka")
    name = args[0] if args else ""
    if name not in ("redis", "postgres"):
        die(f"usage: ops/stack {action} redis|postgres")
    addr = component_addr(name)
    port = addr.rsplit(":", 1)[1]
    data = STATE + "/pg/data"
    if action in ("stop", "restart"):
        if name == "redis":
            pid, live = pidfile_live(STATE + "/redis/redis.pid", "redis-server")
            if live:
                stop_pid(pid, "redis")
        else:
            pg_stop(data)
        say(f"{name} stopped")
    if action in ("start", "restart"):
        if name == "redis":
            if not redis_ping(port):
                pidfile = STATE + "/redis/redis.pid"
                redis_server_start(port, pidfile, LOGS + "/redis.log")
                if not wait_until(START_TIMEOUT, f"redis on port {port}",
                                  lambda: redis_ping(port)):
                    die(f"Redis did not start again on port {port} (log: {LOGS}/redis.log)")
                wait_until(5, "redis pid file", lambda: has_content(pidfile))
        elif not pidfile_live(data + "/postmaster.pid", "postgres")[1]:
            pg_cleanup_crash(data)
            if not pg_start_server(data, port, LOGS + "/postgres.log"):
                die(f"PostgreSQL did not start again on port {port} (log: {LOGS}/postgres.log)")
        say(f"{name} up on {addr}")
    return 0


def usage(out):
    """The header comment of ops/stack, the entry point."""
    with open(ENTRY) as f:
        lines = f.read().splitlines()[1:]
    for line in lines:
        if not line.startswith("#"):
            break
        out.write(re.sub(r"^# ?", "", line) + "\n")


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "up":
        return cmd_up(argv[1:])
    if cmd == "down":
        return cmd_down()
    if cmd == "status":
        return cmd_status()
    if cmd == "env":
        return cmd_env()
    if cmd == "worker":
        return cmd_worker(argv[1:])
    if cmd in ("stop", "start", "restart"):
        return cmd_server(cmd, argv[1:])
    if cmd == "failover":
        import ha
        return ha.cmd_failover(argv[1:])
    if cmd == "rejoin":
        import ha
        return ha.cmd_rejoin(argv[1:])
    if cmd in ("-h", "--help", "help"):
        usage(sys.stdout)
        return 0
    usage(sys.stderr)
    return 2


STOP_TIMEOUT = START_TIMEOUT = 0

if __name__ == "__main__":
    # ops/stack.d/ha.py imports this module as `stack`: the same one, not a second copy.
    sys.modules["stack"] = sys.modules[__name__]
    try:
        STOP_TIMEOUT = _env_int("RELFLEET_STACK_STOP_TIMEOUT", 10)
        START_TIMEOUT = _env_int("RELFLEET_STACK_START_TIMEOUT", 30)
        sys.exit(main(sys.argv[1:]))
    except Die as e:
        warn(str(e))
        sys.exit(1)
