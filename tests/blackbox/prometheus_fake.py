"""A local Prometheus-compatible HTTP endpoint of the tests' own: /api/v1/query answers with
the sample the test set for that query (or an empty vector: no data), and /web/<name> with
the JSON document and status the test set. Every request is recorded; a query the test
holds is answered only once it lets it go."""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PrometheusFake:
    def __init__(self):
        self.samples = {}   # query -> value (str or number); absent -> empty result
        self.errors = {}    # query -> HTTP status to answer with
        self.docs = {}      # web name -> (status, document)
        self.requests = []  # (path, query) as received
        self.holds = {}     # query -> threading.Event its answers wait for
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query)
                with fake.lock:
                    fake.requests.append((url.path, params.get("query", [""])[0]))
                if url.path == "/api/v1/query":
                    q = params.get("query", [""])[0]
                    with fake.lock:
                        gate = fake.holds.get(q)
                    if gate:
                        gate.wait(120)
                    with fake.lock:
                        err = fake.errors.get(q)
                        value = fake.samples.get(q)
                    if err:
                        return self._send(err, {"status": "error", "errorType": "internal",
                                                "error": "injected by the test"})
                    result = [] if value is None else [
                        {"metric": {"__name__": "x"}, "value": [time.time(), str(value)]}]
                    return self._send(200, {"status": "success",
                                            "data": {"resultType": "vector", "result": result}})
                if url.path.startswith("/web/"):
                    with fake.lock:
                        status, doc = fake.docs.get(url.path[5:], (404, {"error": "unknown"}))
                    return self._send(status, doc)
                return self._send(404, {"status": "error", "error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def queries(self, q):
        with self.lock:
            return sum(1 for path, query in self.requests
                       if path == "/api/v1/query" and query == q)

    def hold(self, q):
        """Answers to query q wait until the returned event is set."""
        with self.lock:
            return self.holds.setdefault(q, threading.Event())

    def close(self):
        with self.lock:
            for gate in self.holds.values():
                gate.set()
        self.server.shutdown()
        self.server.server_close()
