"""ops/bench --quick runs and prints its table: a smoke check only, numbers are never asserted."""
import json
import subprocess

from harness import REPO, build_dir


def test_bench_quick_runs_and_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(REPO / "ops" / "bench"), "--quick", "--json", str(out), "--build-dir",
         str(build_dir())],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    table = proc.stdout
    assert "Relfleet benchmark (quick)" in table and "machine:" in table, table
    for row in ("1. end to end", "2. at 50/s", "3. track", "4. render", "5. apply",
                "kubectl rollout status", "commands:"):
        assert row in table, f"no '{row}' row:\n{table}"
    report = json.loads(out.read_text())
    assert set(report["figures"]) == {"throughput", "latency", "tracking", "render", "apply"}
    assert "error" not in report, report.get("error")
    # figure 2's breakdown of the apply worker's time: every part counted each applied
    # release of the steady run, the API round trips by method
    lat = report["figures"]["latency"]
    parts = lat["apply_breakdown"]
    for part in ("queue", "batch", "pg_read", "lock", "api", "round", "pg_finish", "after"):
        assert parts[part]["n"] == lat["releases"], (part, parts[part], lat["releases"])
    assert parts["delivery (per poll batch)"]["n"] > 0, parts
    assert parts["API PATCH (each)"]["per_release"] >= 2, parts  # Deployment + Service
    assert "apply's time by part" in table, table
