"""Just enough of Redis' RESP and Kafka's Metadata and FindCoordinator for ops/stack's status
and failovers, on the standard library (no password on any command line)."""
import socket
import struct


class WireError(Exception):
    pass


# -- Redis ------------------------------------------------------------------------------
def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise WireError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise WireError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise WireError(f"bad reply {line[:40]!r}")


def redis_call(port, *commands, password=None, host="127.0.0.1", timeout=2.0):
    """Runs commands (each a tuple of words) on one connection, after AUTH when a password
    is given; returns their replies. WireError or OSError on failure."""
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        if password:
            commands = (("AUTH", password),) + commands
        out = bytearray()
        for words in commands:
            out += b"*%d\r\n" % len(words)
            for w in words:
                w = str(w).encode()
                out += b"$%d\r\n%s\r\n" % (len(w), w)
        s.sendall(out)
        f = s.makefile("rb")
        replies = [_resp_read(f) for _ in commands]
    return replies[1:] if password else replies


def redis_try(port, *words, password=None):
    """One command's reply, or None when the server is unreachable or answers an error."""
    try:
        return redis_call(port, tuple(words), password=password)[0]
    except (OSError, WireError, ValueError):
        return None


# -- Kafka ------------------------------------------------------------------------------
def _kafka_request(host, port, api_key, version, body, timeout):
    header = struct.pack(">hhih", api_key, version, 1, len(b"ops-stack")) + b"ops-stack"
    msg = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        f = s.makefile("rb")
        size = f.read(4)
        if len(size) != 4:
            raise WireError("connection closed")
        data = f.read(struct.unpack(">i", size)[0])
    return _Reader(data[4:])  # past the correlation id


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s


def kafka_metadata(host, port, timeout=3.0):
    """({broker id: (host, port)}, {topic: {partition: leader}}) from Metadata v1."""
    r = _kafka_request(host, port, 3, 1, struct.pack(">i", -1), timeout)
    brokers = {}
    for _ in range(r.take(">i")):
        node = r.take(">i")
        bhost = r.string()
        bport = r.take(">i")
        r.string()  # rack
        brokers[node] = (bhost, bport)
    r.take(">i")  # controller
    topics = {}
    for _ in range(r.take(">i")):
        r.take(">h")
        name = r.string()
        r.take(">b")  # internal
        parts = {}
        for _ in range(r.take(">i")):
            r.take(">h")
            pid = r.take(">i")
            parts[pid] = r.take(">i")
            for _ in range(2):  # replicas, isr
                for _ in range(r.take(">i")):
                    r.take(">i")
        topics[name] = parts
    return brokers, topics


def kafka_coordinator(host, port, group, timeout=3.0):
    """The node id of a consumer group's coordinator (FindCoordinator v0)."""
    g = group.encode()
    r = _kafka_request(host, port, 10, 0, struct.pack(">h", len(g)) + g, timeout)
    err = r.take(">h")
    if err:
        raise WireError(f"FindCoordinator of '{group}': error {err}")
    return r.take(">i")


def kafka_answers(host, port):
    """True when a broker answers a Metadata request."""
    try:
        kafka_metadata(host, port, timeout=1.0)
        return True
    except (OSError, WireError, struct.error):
        return False
