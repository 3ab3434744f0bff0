"""A small exporter of the tests' own: /metrics in the Prometheus text format with the request
counters a service would export (http_requests_total{service, code}), growing at the rates the
test sets, and a target file that makes the stack's Prometheus scrape it (file-based service
discovery: ops/stack's prometheus/targets/). Tests query the real Prometheus for these series."""
import json
import os
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MetricsExporter:
    def __init__(self, state_dir):
        self.rates = {}     # (service, code) -> requests per second
        self.counts = {}    # (service, code) -> count at `since`
        self.since = {}     # (service, code) -> monotonic time the rate was set
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                data = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.target_file = os.path.join(state_dir, "prometheus", "targets",
                                        f"test-exporter-{self.server.server_address[1]}.json")
        with open(self.target_file + ".tmp", "w") as f:
            json.dump([{"targets": [self.addr], "labels": {"instance": "test-exporter"}}], f)
        os.replace(self.target_file + ".tmp", self.target_file)

    def _count(self, key, now):
        return self.counts.get(key, 0.0) + self.rates.get(key, 0.0) * (now - self.since[key])

    def set_rate(self, service, code, per_second):
        """From now on, service answers per_second requests a second with status code."""
        key = (service, str(code))
        now = time.monotonic()
        with self.lock:
            if key in self.since:
                self.counts[key] = self._count(key, now)
            self.since[key] = now
            self.rates[key] = float(per_second)

    def render(self):
        now = time.monotonic()
        lines = ["# HELP http_requests_total Requests answered, by service and status code",
                 "# TYPE http_requests_total counter"]
        with self.lock:
            for key in sorted(self.rates):
                service, code = key
                lines.append(f'http_requests_total{{service="{service}",code="{code}"}} '
                             f"{self._count(key, now):.3f}")
        return "\n".join(lines) + "\n"

    def close(self):
        try:
            os.unlink(self.target_file)
        except FileNotFoundError:
            pass
        self.server.shutdown()
        self.server.server_close()


def prometheus_query(url, query, timeout=10):
    """The result list of an instant query against a real Prometheus (its /api/v1/query)."""
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}),
                                timeout=timeout) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]
