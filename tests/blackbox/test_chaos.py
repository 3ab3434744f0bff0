"""The bounded chaos run (tests/chaos/run does the same, and the soak): releases published
while workers of every stage are killed and frozen past their lease, the broker fails and
goes down, Redis and PostgreSQL restart; nothing is lost, doubled or overlapped."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

import chaos  # noqa: E402


def test_chaos_loses_doubles_and_overlaps_nothing(stack_factory):
    stack = stack_factory.start(extra_env=chaos.STACK_ENV)
    run = chaos.Chaos(stack, releases=24, services=4, publish_s=40.0)
    figures = run.run()
    print(f"seed {run.seed}\n" + chaos.format_figures(figures))
    assert set(figures["faults_by_kind"]) == set(chaos.FAULTS), figures["faults_by_kind"]
    assert figures["lost"] == 0 and figures["overlaps"] == 0, run.violations
    assert figures["workers_dead"] == 0, run.violations
    assert not run.violations, f"seed {run.seed}: " + "\n".join(run.violations)
