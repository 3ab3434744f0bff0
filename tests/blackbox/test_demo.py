"""The README's first command, `ops/demo/run`, as a user runs it: it installs what is missing,
builds, starts a stack of its own, takes shop-web through a success, a failure with the pods'
reasons and a release queued behind a slow one, prints the history, and stops everything it
started."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import REPO, STACK_SETTINGS, build_dir

RELEASE_END = re.compile(r"^release ([0-9a-f-]{36}) (succeeded|failed) in ([0-9.]+) s(.*)$", re.M)


def processes_under(folder):
    """Processes whose command line names the folder (the stack's servers and workers all
    take their state folder or a file in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def run_demo(state):
    # As a user's shell has it: no settings of another stack, the stack's user can enter the
    # folder (pytest's tmp_path is closed to others), a short path for PostgreSQL's socket.
    env = {k: v for k, v in os.environ.items() if k not in STACK_SETTINGS}
    env.update({"RELFLEET_STATE_DIR": str(state), "RELFLEET_BUILD_DIR": str(build_dir())})
    return subprocess.run([str(REPO / "ops" / "demo" / "run")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_demo_runs_a_release_through_every_stage_and_stops_its_stack():
    state = Path(tempfile.mkdtemp(prefix="relfleet-demo-", dir="/tmp"))
    try:
        proc = run_demo(state)
        check_demo(proc, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def check_demo(proc, state):
    out = proc.stdout
    assert proc.returncode == 0, f"ops/demo/run exited {proc.returncode}\n{out[-4000:]}\n{proc.stderr[-4000:]}"

    steps = re.findall(r"^== (.*)$", out, re.M)
    assert [s.split(" ")[0] for s in steps] == [
        "installing", "building", "starting", "templates", "release", "release", "a",
        "history", "the", "stopping"], steps

    # Every stage shows up live for the first release, in order.
    first = out[out.index("== release 1.0.0"):out.index("== release fail-2.0.0")]
    stages = [m.group(1) for m in re.finditer(r"^\s+\d\d:\d\d:\d\d\.\d{3}\s+(\w+)\s+(\w+)", first, re.M)]
    for a, b in (("render", "apply"), ("apply", "track")):
        assert a in stages and b in stages and stages.index(a) < stages.index(b), stages
    assert re.search(r"^\s+\S+\s+track\s+succeeded\s", first, re.M), first

    ends = RELEASE_END.findall(out)
    assert [e[1] for e in ends] == ["succeeded", "failed", "succeeded", "succeeded"], ends
    assert "exceeded its progress deadline" in ends[1][3], ends[1]
    assert len({e[0] for e in ends}) == 4

    history = out[out.index("== history"):out.index("== the last release")]
    for release_id, status, _, _ in ends:
        assert re.search(rf"^{release_id}\s+shop-web\s+prod\s+\S+\s+deploy\s+{status}\s", history,
                         re.M), (release_id, status, history)
    # The queued release ran after the slow one it waited for, and its detail names it.
    detail = out[out.index("== the last release"):]
    assert ends[3][0] in detail and re.search(r"^status\s+succeeded$", detail, re.M), detail
    assert "queued behind it" in detail

    assert re.search(r"^ops/stack: down in .* \(\d+ processes stopped\)$", out, re.M), out[-2000:]
    assert processes_under(state) == []
