"""The chaos test of waves (issue 17): a wave of many services with a small max-parallel while
workers of every stage are SIGKILLed and frozen past their lease; then, from the release
records' started_at/finished_at, never more than max-parallel ran at once, every release of
the wave ended once, a failure budget halts a wave (no release starts after the halt) and
after an abort no release of the wave starts (tests/chaos/waves, test_waves_chaos.py)."""
import json
import os
import random
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos  # noqa: E402
from chaos import LOCK_LEASE_MS, TEMPLATES, Harness, log  # noqa: E402


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def max_overlap(releases):
    points = []
    for r in releases:
        if r["started_at"]:
            points += [(ts(r["started_at"]), 1), (ts(r["finished_at"]) or float("inf"), -1)]
    most = now = 0
    for _, d in sorted(points):
        now += d
        most = max(most, now)
    return most


class WaveChaos:
    def __init__(self, stack, services=200, max_parallel=5, seed=None, fault_gap_s=(1.0, 2.5)):
        self.stack = stack
        self.h = Harness(stack)
        self.n = services
        self.max_parallel = max_parallel
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.fault_gap_s = fault_gap_s
        self.faults = []
        self.violations = []
        self.figures = {}
        self.stop = threading.Event()

    def relctl_json(self, *args):
        return self.h.relctl_json(*args)

    def services(self, n, group, timeout):
        h = self.h
        names = []
        for i in range(n):
            svc = f"{group[:3]}{i:04d}-{group[-8:]}"
            h.relctl("service", "set", svc, "--env", "prod", "template=web",
                     f"namespace=ns-{svc[-12:]}", "replicas=1", f"group={group}",
                     f"timeout={timeout}")
            names.append(svc)
        return names

    def faults_loop(self):
        stages = ["render", "apply", "track"]
        while not self.stop.wait(self.rng.uniform(*self.fault_gap_s)):
            stage = self.rng.choice(stages)
            if self.rng.random() < 0.75:
                out = self.stack.run("worker", "kill", stage, "KILL", check=False).stdout.split()
                self.stack.run("worker", "start", stage, check=False)
                self.faults.append(("kill", stage))
                log(f"wave chaos: SIGKILL {stage} {' '.join(out[1:])}, started another")
            else:
                rows = [line.split() for line in
                        self.stack.run("worker", "list", check=False).stdout.splitlines()]
                live = [int(r[2]) for r in rows if len(r) == 4 and r[0] == stage and r[3] == "alive"]
                if not live:
                    continue
                pid = self.rng.choice(live)
                hold = LOCK_LEASE_MS / 1000.0 + self.rng.uniform(0.5, 2.0)
                os.kill(pid, signal.SIGSTOP)
                log(f"wave chaos: SIGSTOP {stage} pid {pid} for {hold:.1f}s")
                self.faults.append(("freeze", stage))
                self.stop.wait(hold)
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def wait_wave(self, wid, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            w = self.relctl_json("wave", "show", wid)
            if pred(w):
                return w
            if time.monotonic() > deadline:
                self.violations.append(f"wave {wid}: {what} not reached in {timeout}s "
                                       f"(status {w['status']}, {w['ended']}/{w['total']})")
                return w
            time.sleep(0.5)

    def check_common(self, w, name):
        rels = w["releases"]
        most = max_overlap(rels)
        self.figures[f"{name}_max_running"] = most
        if most > self.max_parallel:
            self.violations.append(f"{name}: {most} releases ran at once, max {self.max_parallel}")
        ids = [r["release_id"] for r in rels if r["release_id"]]
        if len(ids) != len(set(ids)):
            self.violations.append(f"{name}: a release id twice")
        rows = self.h.psql(f"SELECT service, count(*) FROM releases WHERE wave_id = '{w['id']}'"
                           " GROUP BY service HAVING count(*) > 1")
        if rows:
            self.violations.append(f"{name}: services with two releases in the wave: {rows[:5]}")
        twice = self.h.psql(
            "SELECT t.release_id FROM timeline t JOIN releases r ON r.id = t.release_id WHERE"
            f" r.wave_id = '{w['id']}' AND t.event IN ('succeeded', 'failed', 'cancelled',"
            " 'superseded', 'rejected') GROUP BY t.release_id HAVING count(*) > 1")
        if twice:
            self.violations.append(f"{name}: releases terminal twice: {twice[:5]}")
        if w["finished_at"] and w["running"] != 0:
            self.violations.append(f"{name}: finished with running = {w['running']}")

    def run(self):
        h = self.h
        h.relctl("template", "sync", TEMPLATES)
        tag = h.unique_service("w")[-8:]
        big = self.services(self.n, "big-" + tag, "20s")
        small = max(10, self.n // 10)
        bad = self.services(small, "bad-" + tag, "2s")
        slow = self.services(small * 2, "slow-" + tag, "20s")
        faults = threading.Thread(target=self.faults_loop, daemon=True)
        faults.start()
        t0 = time.monotonic()
        try:
            wid = self.relctl_json("wave", "create", "--select", f"group=big-{tag}", "--version",
                                   "1.0.0", "--env", "prod", "--max-parallel",
                                   str(self.max_parallel), "--max-failures", "100%",
                                   "--steps", json.dumps([{"percent": 10}, {"percent": 100}]))["id"]
            w = self.wait_wave(wid, lambda w: w["finished_at"], 60 + self.n * 3, "the end")
            self.figures["big_seconds"] = round(time.monotonic() - t0, 1)
            self.figures["big_status"] = w["status"]
            self.figures["big_counts"] = w["counts"]
            if w["status"] != "succeeded" or w["counts"]["succeeded"] + w["counts"]["failed"] \
                    + w["counts"]["cancelled"] != self.n:
                self.violations.append(f"big wave: {w['status']} {w['counts']}")
            self.check_common(w, "big")

            wid = self.relctl_json("wave", "create", "--select", f"group=bad-{tag}", "--version",
                                   "bad-1", "--env", "prod", "--max-parallel",
                                   str(self.max_parallel), "--max-failures", "3")["id"]
            w = self.wait_wave(wid, lambda w: w["finished_at"], 180, "the halt")
            self.figures["budget_status"] = w["status"]
            self.figures["budget_failed"] = w["failed"]
            if w["status"] != "halted":
                self.violations.append(f"budget wave: {w['status']}, not halted")
            else:
                halted = ts(next(e["at"] for e in w["events"] if e["event"] == "halted"))
                late = [r for r in w["releases"] if r["started_at"] and ts(r["started_at"]) > halted]
                if late:
                    self.violations.append(f"budget wave: {len(late)} started after the halt")
            self.check_common(w, "budget")

            wid = self.relctl_json("wave", "create", "--select", f"group=slow-{tag}", "--version",
                                   "slow-1", "--env", "prod", "--max-parallel",
                                   str(self.max_parallel))["id"]
            self.wait_wave(wid, lambda w: w["ended"] >= self.max_parallel, 180, "some ended")
            h.relctl("wave", "abort", wid, "-m", "chaos")
            w = self.wait_wave(wid, lambda w: w["finished_at"], 180, "the aborted wave's end")
            aborted = ts(next(e["at"] for e in w["events"] if e["event"] == "abort"))
            late = [r for r in w["releases"] if r["started_at"] and ts(r["started_at"]) > aborted]
            self.figures["abort_started_after"] = len(late)
            self.figures["abort_pending"] = w["counts"]["pending"]
            if late:
                self.violations.append(f"aborted wave: {len(late)} releases started after abort")
            if w["status"] != "aborted" or w["counts"]["queued"] or w["counts"]["running"]:
                self.violations.append(f"aborted wave: {w['status']} {w['counts']}")
            self.check_common(w, "abort")
        finally:
            self.stop.set()
            faults.join(timeout=30)
        self.figures["faults"] = len(self.faults)
        self.figures["kills"] = sum(1 for f in self.faults if f[0] == "kill")
        self.figures["freezes"] = sum(1 for f in self.faults if f[0] == "freeze")
        dead = [line for line in self.stack.run("worker", "list", check=False).stdout.splitlines()
                if line.endswith("dead")]
        self.figures["workers_dead_at_end"] = len(dead)
        self.figures["seed"] = self.seed
        return self.figures
