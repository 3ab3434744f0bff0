"""The CI templates as they ship: the script of ops/ci/gitlab/relfleet.gitlab-ci.yml's job and
the run step of ops/ci/github/action.yml, taken out of the YAML and run with bash against the
local stack, with the variables GitLab CI and GitHub Actions set, for a release that succeeds
and one that fails."""
import os
import re
import subprocess
import uuid

import yaml

from harness import REPO, bin_path
from releases import record, setup_service

GITLAB = REPO / "ops" / "ci" / "gitlab" / "relfleet.gitlab-ci.yml"
GITHUB = REPO / "ops" / "ci" / "github" / "action.yml"
DIGEST = "sha256:" + "ab" * 32


def ci_env(h, tmp_path, extra):
    """The stack's settings (masked CI/CD variables or secrets in a real pipeline), relctl on
    the PATH, and what the CI system sets."""
    env = {k: v for k, v in h.env.items()}
    env["PATH"] = f"{bin_path('relctl').parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(tmp_path)
    env.update(extra)
    return env


def run_gitlab(h, tmp_path, job_variables, predefined):
    doc = yaml.safe_load(GITLAB.read_text())
    job = doc[".relfleet-deploy"]
    script = tmp_path / "gitlab-job.sh"
    script.write_text("\n".join(job["script"]) + "\n")
    # Variables: the template's, then the including job's, then GitLab's predefined ones.
    variables = dict(job["variables"])
    variables.update(job_variables)
    env = ci_env(h, tmp_path, {**variables, "CI": "true", "GITLAB_CI": "true",
                               "CI_PROJECT_DIR": str(tmp_path),
                               "CI_PIPELINE_ID": "4711",
                               "CI_PIPELINE_URL": "https://gitlab.example/shop/web/-/pipelines/4711",
                               "GITLAB_USER_LOGIN": "dev-anna", **predefined})
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)
    dotenv = tmp_path / "relfleet.env"
    report = dict(line.split("=", 1) for line in dotenv.read_text().splitlines()) \
        if dotenv.exists() else {}
    return proc, report


def run_github(h, tmp_path, inputs, predefined):
    action = yaml.safe_load(GITHUB.read_text())
    assert action["runs"]["using"] == "composite"
    step = action["runs"]["steps"][0]
    assert step["shell"] == "bash"
    # ${{ inputs.NAME }} in the step's env, as the runner evaluates it: the input or its default.
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update(inputs)
    missing = [n for n, spec in action["inputs"].items() if spec.get("required") and n not in inputs]
    assert not missing, missing
    step_env = {k: re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: values[m.group(1)], v)
                for k, v in step["env"].items()}
    script = tmp_path / "github-step.sh"
    script.write_text(step["run"])
    output, summary = tmp_path / "github-output", tmp_path / "github-summary"
    env = ci_env(h, tmp_path, {**step_env, "CI": "true", "GITHUB_ACTIONS": "true",
                               "GITHUB_REPOSITORY": "shop/web",
                               "GITHUB_SERVER_URL": "https://github.example",
                               "GITHUB_RUN_ID": "987654", "GITHUB_ACTOR": "dev-bob",
                               "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
                               **predefined})
    # What the runner runs for shell: bash.
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines()) \
        if output.exists() else {}
    return proc, outputs, summary.read_text() if summary.exists() else ""


def released(h, svc, version):
    """The newest release of the service, its image registration."""
    hist = h.relctl_json("history", "--service", svc, "--limit", "1")
    images = {i["tag"]: i for i in h.relctl_json("image", "list", svc)}
    return record(h, hist[0]["id"]), images.get(version)


def test_gitlab_job_releases_the_tag_and_passes(harness, tmp_path):
    h = harness
    svc = setup_service(h, versions=())
    proc, report = run_gitlab(h, tmp_path,
                              {"RELEASE_SERVICE": svc, "RELEASE_ENV": "prod",
                               "RELEASE_IMAGE_DIGEST": DIGEST},
                              {"CI_COMMIT_TAG": "2.3.0", "CI_COMMIT_SHA": "c0ffee" * 6 + "abcd",
                               "CI_COMMIT_SHORT_SHA": "c0ffeec0", "CI_COMMIT_TITLE": "Fix checkout"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec, image = released(h, svc, "2.3.0")
    assert rec["status"] == "succeeded" and rec["version"] == "2.3.0", rec
    assert image and image["digest"] == DIGEST, image
    assert rec["description"] == \
        "Fix checkout (pipeline https://gitlab.example/shop/web/-/pipelines/4711)", rec
    # The timeline is in the job log, as relctl watch prints it.
    assert "lock acquired" in proc.stdout and "release succeeded" in proc.stdout, proc.stdout
    assert report == {"RELEASE_ID": rec["id"], "RELEASE_STATUS": "succeeded"}, report


def test_gitlab_job_fails_with_the_release(harness, tmp_path):
    h = harness
    svc = setup_service(h, versions=(), timeout="2s")
    proc, report = run_gitlab(h, tmp_path, {"RELEASE_SERVICE": svc, "RELEASE_ENV": "prod"},
                              {"CI_COMMIT_SHA": "bad0c0de" * 5, "CI_COMMIT_SHORT_SHA": "bad0c0de",
                               "CI_COMMIT_TITLE": "Break it"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec, image = released(h, svc, "bad0c0de")
    assert rec["status"] == "failed" and rec["version"] == "bad0c0de", rec
    assert image and image["digest"] is None, image
    # Why, in the job log: the timeout and the pod that never pulled its image.
    assert "timed out" in proc.stdout and "ImagePullBackOff" in proc.stdout, proc.stdout
    assert report == {"RELEASE_ID": rec["id"], "RELEASE_STATUS": "failed"}, report


def test_github_action_releases_the_commit_and_passes(harness, tmp_path):
    h = harness
    svc = setup_service(h, versions=())
    sha = uuid.uuid4().hex + "abcdef01"
    proc, outputs, summary = run_github(
        h, tmp_path, {"service": svc, "env": "prod", "digest": DIGEST},
        {"GITHUB_SHA": sha, "GITHUB_REF_TYPE": "branch", "GITHUB_REF_NAME": "main"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec, image = released(h, svc, sha[:12])
    assert rec["status"] == "succeeded" and rec["version"] == sha[:12], rec
    assert image and image["digest"] == DIGEST, image
    assert rec["description"] == \
        f"shop/web@{sha} (run https://github.example/shop/web/actions/runs/987654)", rec
    assert "release succeeded" in proc.stdout, proc.stdout
    assert outputs == {"release-id": rec["id"], "status": "succeeded"}, outputs
    assert f"{svc} {sha[:12]} into prod: succeeded" in summary and rec["id"] in summary, summary


def test_github_action_fails_with_the_release_of_a_tag(harness, tmp_path):
    h = harness
    svc = setup_service(h, versions=(), timeout="2s")
    proc, outputs, summary = run_github(
        h, tmp_path, {"service": svc, "env": "prod"},
        {"GITHUB_SHA": uuid.uuid4().hex, "GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "bad-9.0"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec, _image = released(h, svc, "bad-9.0")
    assert rec["status"] == "failed" and rec["version"] == "bad-9.0", rec
    assert "timed out" in proc.stdout and "ImagePullBackOff" in proc.stdout, proc.stdout
    assert outputs == {"release-id": rec["id"], "status": "failed"}, outputs
    assert ": failed" in summary, summary
