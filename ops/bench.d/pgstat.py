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
made once). Beside them, work that does not depend on the machine's speed: the WAL written
per release (pg_current_wal_lsn before and after, autovacuum's and checkpoints' included),
each statement's WAL bytes, and the rows inserted, updated (HOT of them) and deleted per
release in each table (pg_stat_user_tables, read once every backend has flushed its
counters: 11 s after the run). On a shared machine compare calls, plans, WAL and rows, and
times only between runs on the same machine state.
"""
import argparse
import os
import sys
import time

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
        time.sleep(11)  # the warm-up's table counters flushed (PGSTAT_IDLE_INTERVAL, 10 s)
        tables_sql = ("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
                      " FROM pg_stat_user_tables")
        before = {r[0]: [int(x) for x in r[1:]] for r in ctx.psql(tables_sql)}
        lsn = ctx.psql("SELECT pg_stat_statements_reset(), pg_current_wal_lsn()")[0][1]
        b = figures.batch(ctx, services, "now-pg", cpu=True)
        n = len(b["sent"])
        wal = int(ctx.psql(f"SELECT pg_current_wal_lsn() - '{lsn}'::pg_lsn")[0][0])
        rows = ctx.psql(
            "SELECT calls, total_exec_time, rows, toplevel,"
            " regexp_replace(left(query, 150), '\\s+', ' ', 'g'), plans, total_plan_time,"
            " wal_bytes FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%'"
            " ORDER BY total_exec_time + total_plan_time DESC")
        time.sleep(11)
        after = {r[0]: [int(x) for x in r[1:]] for r in ctx.psql(tables_sql)}
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
        writes = []
        for t in sorted(after):
            d = [x - y for x, y in zip(after[t], before.get(t, [0, 0, 0, 0]))]
            if any(d):
                writes.append(f"{t} {d[0] / n:.2f}/{d[1] / n:.2f} ({d[2] / n:.2f})/{d[3] / n:.2f}")
        print(f"WAL per release: {wal / n / 1024:.2f} KiB; rows inserted/updated (HOT)/deleted per "
              "release: " + ", ".join(writes))
        print(f"{'calls/rel':>9} {'ms/rel':>7} {'plans/rel':>9} {'plan ms':>7} {'rows/call':>9} "
              f"{'WAL/rel':>7} top  statement")
        for calls, ms, nrows, top, q, nplans, pms, wb in rows[:a.top]:
            c = int(calls)
            print(f"{c / n:9.3f} {float(ms) / n:7.4f} {int(nplans) / n:9.3f} {float(pms) / n:7.4f} "
                  f"{int(nrows) / max(c, 1):9.1f} {int(wb) / n:7.0f} {'yes' if top == 't' else 'no ':3}"
                  f"  {q}")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
