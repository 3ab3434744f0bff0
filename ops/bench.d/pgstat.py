#!/usr/bin/python3
"""PostgreSQL statements per release, from pg_stat_statements, over N distinct releases.

  ops/bench.d/pgstat.py [--releases N] [--build-dir DIR] [--top 25]

A bench stack of its own (benchlib.Stack); its PostgreSQL is restarted once with
shared_preload_libraries = pg_stat_statements (track = all: statements inside functions
and triggers too; track_planning: the time of each plan made) and the extension created. A
warm-up release of N distinct services, the statistics reset, the same N services released
again; prints each statement's calls, plans and execution and planning time per release,
by total time, the totals, and the CPU of PostgreSQL's processes per release over the run
(benchlib.CpuLedger). Execution time is what PostgreSQL spent executing (not parsing, not
the round trip); planning time is a prepared statement's custom plans (a generic plan is
made once). On a shared machine compare calls and plans, and times only between runs on
the same machine state.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import figures  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--releases", type=int, default=1000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--build-dir", default=os.environ.get("RELFLEET_BUILD_DIR",
                                                          os.path.join(bl.ROOT, "build")))
    a = ap.parse_args()
    stack = bl.Stack(os.path.abspath(a.build_dir))
    try:
        stack.up()
        ctx = bl.Context(stack)
        ctx.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        stack.run("restart", "postgres")
        ctx.psql("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        ctx.psql("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        ctx.psql("SELECT pg_reload_conf()")
        ctx.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        services = ctx.services("pg", a.releases)
        figures.batch(ctx, services, "now-pgwarm")
        ctx.psql("SELECT pg_stat_statements_reset()")
        b = figures.batch(ctx, services, "now-pg", cpu=True)
        n = len(b["sent"])
        rows = ctx.psql(
            "SELECT calls, total_exec_time, rows, toplevel,"
            " regexp_replace(left(query, 150), '\\s+', ' ', 'g'), plans, total_plan_time"
            " FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%'"
            " ORDER BY total_exec_time + total_plan_time DESC")
        top_calls = sum(int(r[0]) for r in rows if r[3] == "t")
        all_calls = sum(int(r[0]) for r in rows)
        top_ms = sum(float(r[1]) for r in rows if r[3] == "t")
        plans = sum(int(r[5]) for r in rows)
        plan_ms = sum(float(r[6]) for r in rows)
        cpu = b["cpu_ms"]
        pg_cpu = sum(v for k, v in cpu.items() if k.startswith("postgres"))
        print(f"{n} releases at {b['rate']:.0f}/s: {top_calls / n:.2f} top-level statements per "
              f"release ({all_calls / n:.2f} with those inside functions and triggers), "
              f"{top_ms / n:.3f} ms of execution per release (top level); {plans / n:.2f} "
              f"plans per release, {plan_ms / n:.3f} ms")
        print(f"CPU per release: PostgreSQL {pg_cpu:.2f} ms of {cpu['total']:.2f} ("
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items())
                          if k.startswith("postgres")) + ")")
        print(f"{'calls/rel':>9} {'ms/rel':>7} {'plans/rel':>9} {'plan ms':>7} {'rows/call':>9} "
              "top  statement")
        for calls, ms, nrows, top, q, nplans, pms in rows[:a.top]:
            c = int(calls)
            print(f"{c / n:9.3f} {float(ms) / n:7.4f} {int(nplans) / n:9.3f} {float(pms) / n:7.4f} "
                  f"{int(nrows) / max(c, 1):9.1f} {'yes' if top == 't' else 'no ':3}  {q}")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
