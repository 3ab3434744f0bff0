#!/usr/bin/python3
"""Relfleet's benchmark (issue 9): the five figures on a local stack of its own.

  ops/bench [--quick] [--json FILE] [--only 1,2,3,4,5] [--build-dir DIR] [--keep]

Starts a stack (ops/stack, own state folder under /tmp, kubesim with ops/bench.d/rules.yaml
at time scale 1), measures, prints one table (machine, commands, median and spread of
each figure over repeated runs), optionally writes the figures as JSON, and stops the
stack. Everything stays on loopback; every wait has a deadline (hard limit --limit s).

  1. end-to-end throughput: releases/s through render, apply, track to `results`, one and
     two workers per stage, distinct services, pods ready at once; per-stage p50/p99 from
     the timeline timestamps
  2. added latency at a steady 50 releases/s: publish -> first object applied, rollout
     complete (seen by a watch of the bench's own) -> `results` produced; the apply
     worker's time by part (its histograms relfleet_apply_part_seconds and
     relfleet_delivery_wait_seconds)
  3. tracking scale: one track worker following N concurrent rollouts (RSS, CPU,
     connections, delay from the last status change to the terminal state), beside one
     `kubectl rollout status` per rollout
  4. render: ops/bench-render (compiled template vs one sed per render), one core
  5. apply: objects/s of the apply stage vs one `kubectl apply --server-side` per release
  6. (--only 6) scale-out: 1, 2, 4, 8 workers per stage, each in a CPU-limited cgroup of
     its own, on a stack of its own with 16 partitions: throughput and efficiency
  7. (--burst N) N requests for distinct services at once, twice (fleet created, then
     redeployed): time to drain, peak consumer lag per stage, peak RSS per worker
Figure 1 also gives the CPU per release of every process (/proc/PID/stat).
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import figures  # noqa: E402

ROOT = bl.ROOT


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(next(l.split()[1] for l in f if l.startswith("MemTotal:"))) // 1024
    pg = subprocess.run(["bash", "-c", "ls -d /usr/lib/postgresql/*/ | sort -V | tail -1"],
                        capture_output=True, text=True).stdout.strip().rstrip("/").rsplit("/", 1)[-1]
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mib": mem,
            "kernel": platform.release(), "postgresql": pg,
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True,
                                    text=True).stdout.split()[2].replace("v=", ""),
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
            "note": "every server (PostgreSQL, Redis, dev broker, kubesim, workers, load "
                    "generator) on this one machine; the local stack's PostgreSQL runs with "
                    "fsync, synchronous_commit and full_page_writes off (throwaway data), its "
                    "consumers with fetch.wait.max.ms 5 (the dev broker holds a fetch that "
                    "long)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each (< 2 min)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--only", default="1,2,3,4,5", help="figures to run (comma-separated; 6, the scale-out, only when named)")
    ap.add_argument("--build-dir", default=os.environ.get("RELFLEET_BUILD_DIR",
                                                          os.path.join(ROOT, "build")))
    ap.add_argument("--runs", type=int, help="repetitions of figures 1, 2, 4, 5 (default 3, quick 1)")
    ap.add_argument("--track-sizes", help="figure 3 sizes (default 1000,10000; quick 300)")
    ap.add_argument("--keep", action="store_true", help="leave the stack up (prints its folder)")
    ap.add_argument("--scaling-quota", type=float, default=0.04,
                    help="figure 6: CPU quota of each worker's cgroup, in cores (default 0.04)")
    ap.add_argument("--scaling-counts", default="1,2,4,8",
                    help="figure 6: workers per stage (default 1,2,4,8; quick 1,2)")
    ap.add_argument("--scaling-plot", metavar="PNG", help="figure 6: also draw it into this PNG")
    ap.add_argument("--burst", type=int, metavar="N",
                    help="figure 7: N release requests for distinct services at once (e.g. 10000)")
    ap.add_argument("--wave", type=int, metavar="N",
                    help="also a wave of N services (docs/waves.md; --wave-parallel, default 500)")
    ap.add_argument("--wave-parallel", type=int, default=500)
    ap.add_argument("--limit", type=float, help="hard time limit in seconds (default 1800, quick 170)")
    a = ap.parse_args()
    a.build_dir = os.path.abspath(a.build_dir)
    only = {int(x) for x in a.only.split(",") if x.strip()}
    runs = a.runs or (1 if a.quick else 3)
    limit = a.limit or (170 if a.quick else 1800)
    sizes = [int(x) for x in (a.track_sizes or ("300" if a.quick else "1000,10000")).split(",")]

    for exe in ("relctl", "relfleet-worker", "relfleet-devbroker", "kubesim", "render-bench"):
        if not os.path.exists(os.path.join(a.build_dir, "bin", exe)):
            sys.exit(f"ops/bench: {a.build_dir}/bin/{exe} is missing: build first "
                     f"(cmake -S . -B build && cmake --build build)")

    stack = None

    def on_limit():
        print(f"ops/bench: time limit {limit:.0f}s reached; stopping", file=sys.stderr, flush=True)
        if stack is not None and not a.keep:
            stack.down()
        os._exit(3)

    timer = threading.Timer(limit, on_limit)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: on_limit())

    started = time.time()
    report = {"command": "ops/bench " + " ".join(sys.argv[1:]), "machine": machine(),
              "mode": "quick" if a.quick else "full", "figures": {}}
    bl.say(f"machine: {report['machine']['cpus']} x {report['machine']['cpu']}, "
           f"{report['machine']['memory_mib']} MiB")
    rc = 0
    try:
        if 4 in only:
            report["figures"]["render"] = figures.render(a.build_dir, runs, a.quick)
        if only & {1, 2, 3, 5}:
            stack = bl.Stack(a.build_dir)
            stack.up()
            ctx = bl.Context(stack)
            if 1 in only:
                report["figures"]["throughput"] = figures.throughput(ctx, runs, a.quick)
            if 2 in only:
                report["figures"]["latency"] = figures.latency(ctx, a.quick, runs)
            if 5 in only:
                report["figures"]["apply"] = figures.apply(ctx, runs, a.quick)
            if 1 in only:
                figures.throughput_two(ctx, runs, a.quick, report["figures"]["throughput"])
            if 3 in only:
                report["figures"]["tracking"] = figures.tracking(ctx, sizes, a.quick)
        if a.burst:
            if stack is None:
                stack = bl.Stack(a.build_dir)
                stack.up()
                ctx = bl.Context(stack)
            report["figures"]["burst"] = figures.burst(ctx, a.burst)
        if a.wave:
            if stack is None:
                stack = bl.Stack(a.build_dir)
                stack.up()
                ctx = bl.Context(stack)
            report["figures"]["wave"] = figures.wave(ctx, a.wave, a.wave_parallel)
        if 6 in only:
            if stack is not None and not a.keep:
                stack.down()
            counts = [int(x) for x in (a.scaling_counts if a.scaling_counts != "1,2,4,8" or
                                       not a.quick else "1,2").split(",")]
            report["figures"]["scaling"] = figures.scaling(a.build_dir, a.quick,
                                                           a.scaling_quota, counts)
            if a.scaling_plot and report["figures"]["scaling"].get("runs"):
                figures.scaling_plot(report["figures"]["scaling"], a.scaling_plot)
                bl.say(f"figure 6 drawn into {a.scaling_plot}")
    except Exception as e:  # the table still prints what was measured
        import traceback
        traceback.print_exc()
        report["error"] = repr(e)
        rc = 1
    finally:
        if stack is not None:
            if a.keep:
                bl.say(f"stack left up in {stack.state}")
            else:
                stack.down()
    report["seconds"] = round(time.time() - started, 1)
    report["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print(figures.table(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        bl.say(f"figures written to {a.json}")
    timer.cancel()
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
