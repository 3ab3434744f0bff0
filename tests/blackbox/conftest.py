"""pytest fixtures for the black-box tests: one local stack per session, a harness per test."""
import atexit
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, Harness, Stack, bin_path  # noqa: E402

_stacks = []


def _down_all():
    while _stacks:
        stack = _stacks.pop()
        try:
            stack.down()
        finally:
            stack.remove()


def _on_sigterm(signum, frame):
    # Let pytest unwind (fixture teardown stops the stacks) instead of dying on the spot.
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(_down_all)
signal.signal(signal.SIGTERM, _on_sigterm)


def start_stack(extra_env=None, ha=False):
    """Starts a stack (with ha, the replicated one of ops/stack up --ha) in a fresh state
    folder; stopped at the end even if the run fails. The caller may stop it earlier with
    stack.down()."""
    if not bin_path("relfleet-devbroker").exists():
        pytest.fail(f"{bin_path('relfleet-devbroker')} is not built "
                    "(cmake -S . -B build && cmake --build build, or set RELFLEET_BUILD_DIR)")
    stack = Stack(extra_env=extra_env, ha=ha)
    _stacks.append(stack)
    stack.up()
    return stack


def stop_stack(stack, save_logs_as=None):
    try:
        if save_logs_as:
            stack.save_logs(REPO / "tests" / "artifacts" / save_logs_as)
        stack.down()
    finally:
        if stack in _stacks:
            _stacks.remove(stack)
        stack.remove()


@pytest.fixture(scope="session")
def stack(request):
    """The session's local stack (ops/stack up in a temporary RELFLEET_STATE_DIR)."""
    s = start_stack()
    yield s
    failed = request.session.testsfailed > 0
    # One stack per pytest-xdist process (ops/test runs two): each keeps its own logs.
    name = "stack-logs" + ("-" + os.environ["PYTEST_XDIST_WORKER"]
                           if os.environ.get("PYTEST_XDIST_WORKER") else "")
    stop_stack(s, save_logs_as=name if failed else None)


@pytest.fixture
def harness(stack):
    """env, relctl, relctl_json, psql, consume, produce, wait_for, unique_service, broker_ctl."""
    return Harness(stack)


@pytest.fixture
def stack_factory():
    """Starts extra stacks for a test (start(extra_env, ha=False) -> Stack); all stopped
    afterwards."""
    started = []

    class Factory:
        @staticmethod
        def start(extra_env=None, ha=False):
            s = start_stack(extra_env, ha=ha)
            started.append(s)
            return s

    yield Factory
    for s in started:
        stop_stack(s)


def pytest_report_header(config):
    return [f"relfleet build: {bin_path('relfleet-devbroker').parent}",
            f"python: {sys.executable}", f"pid: {os.getpid()}"]
