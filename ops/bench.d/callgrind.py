#!/usr/bin/python3
"""Instructions per release of one process of the stack, under valgrind's callgrind.

  ops/bench.d/callgrind.py TARGET [--releases N] [--out DIR] [--build-dir DIR]

TARGET: kubesim, or a stage (render, apply, track, notify) whose one worker is replaced by
one under callgrind. A bench stack of its own (benchlib.Stack) runs a warm-up release of N
distinct services (objects and namespace created), then callgrind's counters are zeroed,
the same N services are released again and the counters dumped: instructions per release
= Ir / N, repeatable whatever else the machine does (wall times are not). Prints the total
and callgrind_annotate's top functions (inclusive and self); the .out file stays in --out.
"""
import argparse
import glob
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import figures  # noqa: E402


def spawn(cmd, env, log):
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def self_costs(path):
    """{function: its own instructions (not its callees')} of a callgrind out file. In the
    format, a cost line after a `calls=` line is the call's inclusive cost, any other the
    current function's own; names are compressed as "(id) name" on first use, "(id)" after.
    A function without a symbol is named by its address and its object (library)."""
    names, objs, own, fn, ob, call = {}, {}, {}, "?", "", False
    for line in open(path, errors="replace"):
        if line.startswith(("ob=", "cob=")):
            key, _, name = line.split("=", 1)[1].rstrip("\n").partition(" ")
            if name:
                objs[key] = os.path.basename(name)
            if line[0] == "o":
                ob = objs.get(key, key)
        elif line.startswith(("fn=", "cfn=")):
            ref = line.split("=", 1)[1].rstrip("\n")
            key, _, name = ref.partition(" ")
            if name:
                names[key] = name
            if line[0] == "f":
                fn = names.get(key, ref)
                fn = f"{fn} [{ob}]" if fn.startswith("0x") else fn
        elif line.startswith("calls="):
            call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if call:
                call = False
            elif len(parts) > 1 and parts[1].isdigit():
                own[fn] = own.get(fn, 0) + int(parts[1])
    return own


def wait_consumed(ctx, stage, topic, timeout):
    """Until the consumer group of stage has committed the end of topic on every partition:
    notify consumes `results`, which the measured run waits for, so without this its dump
    would come before the notify worker under callgrind (~50 times slower) has read them.
    committed() asks the group's coordinator without joining the group."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": ctx.env["RELFLEET_KAFKA_BROKERS"],
                  "group.id": ctx.prefix + stage, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10)
                 .topics[topic].partitions]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}

        def done():
            got = c.committed(parts, timeout=10)
            return all(tp.offset >= ends[tp.partition] for tp in got)
        bl.wait_for(done, timeout, f"{stage} to consume {topic}", 0.5)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--releases", type=int, default=200)
    ap.add_argument("--out", default="/tmp")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--build-dir", default=os.environ.get("RELFLEET_BUILD_DIR",
                                                          os.path.join(bl.ROOT, "build")))
    a = ap.parse_args()
    a.build_dir = os.path.abspath(a.build_dir)
    # Under callgrind a worker is ~50 times slower: a release may wait in its partition
    # longer than the lock lease, and the render worker's sweep then publishes its
    # `rendered` again (a lost message, as it must assume): duplicates the target would
    # count as work per release. A lease of 10 minutes keeps one message per release.
    stack = bl.Stack(a.build_dir)
    stack.base_env["RELFLEET_LOCK_LEASE_MS"] = "600000"
    proc = None
    os.makedirs(a.out, exist_ok=True)  # valgrind cannot create it: the worker would die unseen
    out = os.path.join(os.path.abspath(a.out), f"callgrind.{a.target}.{os.getpid()}.out")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
          "--separate-threads=no", "--collect-atstart=yes"]
    try:
        stack.up()
        ctx = bl.Context(stack)
        env = stack.client_env()
        log = os.path.join(stack.state, "logs", f"callgrind-{a.target}.log")
        if a.target == "kubesim":
            pid = stack.component_pid("kubesim")
            args = open(f"/proc/{pid}/cmdline").read().split("\0")[:-1]
            os.kill(pid, signal.SIGTERM)
            bl.wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                        open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "kubesim to exit")
            addr = ctx.kube_url.split("//", 1)[1]
            os.unlink(os.path.join(stack.state, "kubesim", "kubesim.addr"))
            proc = spawn(vg + args + ["--listen", addr], env, log)
            bl.wait_for(lambda: os.path.exists(os.path.join(stack.state, "kubesim",
                                                            "kubesim.addr")), 120,
                        "kubesim under callgrind")
        else:
            stack.stop_worker(a.target)
            wenv = dict(env, RELFLEET_METRICS_ADDR="127.0.0.1:0")
            proc = spawn(vg + [os.path.join(a.build_dir, "bin", "relfleet-worker"), a.target],
                         wenv, log)
        services = ctx.services("cg", a.releases)
        bl.say(f"{a.target} under callgrind (pid {proc.pid}); warm-up of {a.releases}")
        figures.batch(ctx, services, "now-cgwarm", timeout=600 + a.releases)
        if a.target == "notify":
            wait_consumed(ctx, "notify", ctx.topic("results"), 600 + a.releases)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       capture_output=True, timeout=120)
        bl.say(f"measured run of {a.releases}")
        b = figures.batch(ctx, services, "now-cg", timeout=600 + a.releases)
        if a.target == "notify":
            wait_consumed(ctx, "notify", ctx.topic("results"), 600 + a.releases)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                       capture_output=True, timeout=120)
        dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
        dump = dumps[-1] if dumps else out
        ir = total_ir(dump)
        print(f"{a.target}: {ir} instructions over {a.releases} releases: "
              f"{ir / a.releases / 1e6:.2f} M per release ({b['rate']:.0f} releases/s under "
              f"callgrind); {dump}")
        p = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", dump],
                           capture_output=True, text=True)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        start = next((i for i, l in enumerate(lines) if "file:function" in l), 0)
        print("inclusive:")
        print("\n".join(lines[start:start + a.top]))
        # callgrind_annotate --inclusive=no puts the whole program under (below main) in a
        # dump taken after --zero: its own costs are read here instead
        own = self_costs(dump)
        total = sum(own.values()) or 1
        print("self (thousands of instructions per release, share):")
        for fn, ir in sorted(own.items(), key=lambda kv: -kv[1])[:a.top]:
            print(f"{ir / a.releases / 1e3:10.1f} k {100 * ir / total:5.1f}%  {fn}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stack.down()


if __name__ == "__main__":
    main()
