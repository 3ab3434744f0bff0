"""Render-time validation (issue 19, parts 4-6): invalid manifests end `rejected` at render,
naming the field, the rendered value and the template line, and nothing is applied;
`relctl template check` and `template sync` say the same before anything is deployed.

The corpus: the manifests of tests/fixtures/kubesim-invalid/ (kubesim's own, each one class
of the API server's validation) used as templates as they are, and the templates of
tests/fixtures/render-invalid/ whose placeholders produce the invalid values. Expected
lines come from PyYAML's own marks, not from Relfleet's line map.
"""
import json
import re
import subprocess

import yaml

from harness import REPO, bin_path
from releases import deploy, record, wait_status
from test_outages import kube_fault

KUBESIM_CORPUS = REPO / "tests" / "fixtures" / "kubesim-invalid"
RENDER_CORPUS = REPO / "tests" / "fixtures" / "render-invalid"
DEMO = REPO / "ops" / "demo" / "templates"


def segments(field):
    """'a.b[0].c[memory]' -> ['a', 'b', 0, 'c', 'memory']."""
    out = []
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", field):
        if part.startswith("["):
            inner = part[1:-1]
            out.append(int(inner) if inner.isdigit() else inner)
        else:
            out.append(part)
    return out


def dotted(segs):
    text = ""
    for s in segs:
        text += f"[{s}]" if isinstance(s, int) else (("." if text else "") + s)
    return text


def yaml_line(path, segs, doc=0):
    """The line PyYAML gives the deepest part of segs in document doc of the file: a
    mapping entry's key, a sequence's item."""
    node = list(yaml.compose_all(open(path)))[doc]
    line = node.start_mark.line + 1
    for s in segs:
        if isinstance(node, yaml.MappingNode) and isinstance(s, str):
            hit = [(k, v) for k, v in node.value if k.value == s]
            if not hit:
                break
            line, node = hit[0][0].start_mark.line + 1, hit[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(s, int) and s < len(node.value):
            node = node.value[s]
            line = node.start_mark.line + 1
        else:
            break
    return line


def yaml_value(path, segs, doc=0):
    cur = list(yaml.safe_load_all(open(path)))[doc]
    for s in segs:
        try:
            cur = cur[s]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def corpus():
    """[(template id, file, settings, field, value text or None, line, message or None)]."""
    cases = []
    for f in sorted(KUBESIM_CORPUS.glob("*.yaml")):
        want = json.load(open(f.with_suffix(".expect.json")))
        segs = segments(want["field"])
        value = yaml_value(f, segs)
        shown = json.dumps(value) if value is not None and not isinstance(value, (dict, list)) \
            else None
        cases.append((f.stem, f, {}, dotted(segs), shown, yaml_line(f, segs), None))
    for f in sorted(RENDER_CORPUS.glob("*.yaml")):
        want = json.load(open(f.with_suffix(".expect.json")))
        cases.append((f.stem, f, want["settings"], want["field"], want["value"], want["line"],
                      want["message"]))
    return cases


def names_the_error(error, field, value, line, message=None):
    """error (the release's or check's text) names field with its value and line."""
    want = f" {field}" + (f": {value}" if value is not None else "")
    found = [part for part in error.split("; ") if want in part]
    assert found, f"no error naming {want!r} in {error!r}"
    assert any(f"(template line {line})" in part for part in found), \
        f"{field}: line {line} not in {found}"
    if message:
        assert any(message in part for part in found), f"{field}: {message!r} not in {found}"


def services_for_corpus(h, cases):
    """A service per case (template = the case), with its settings and a namespace of its
    own; the templates synced. Returns {template id: service}."""
    services = {}
    for tid, _, settings, *_ in cases:
        svc = h.unique_service("rv")
        pairs = [f"template={tid}", f"namespace=ns-{svc[-10:]}", "replicas=1"]
        pairs += [f"{k}={v}" for k, v in settings.items()]
        h.relctl("service", "set", svc, "--env", "prod", *pairs)
        services[tid] = svc
    # after the services: sync refuses placeholders that no service sets
    h.relctl("template", "sync", str(KUBESIM_CORPUS))
    h.relctl("template", "sync", str(RENDER_CORPUS))
    return services


def applies(h):
    return json.loads(subprocess.run(
        ["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "get", "--raw",
         "/kubesim/applies"], env=h.env, check=True, capture_output=True, text=True).stdout)


def test_invalid_manifests_end_rejected_at_render_and_nothing_is_applied(harness):
    h = harness
    cases = corpus()
    assert len(cases) >= 12
    services = services_for_corpus(h, cases)
    releases = {tid: deploy(h, services[tid], "1.0.0") for tid, *_ in cases}
    ids = ",".join(f"'{rid}'" for rid in releases.values())
    h.wait_for(lambda: h.psql(f"SELECT count(*) FROM releases WHERE id IN ({ids})"
                              f" AND status NOT IN ('queued', 'rendering')")[0][0]
               == str(len(releases)), 60, "every release of the corpus to leave queued")
    for tid, _, _, field, value, line, message in cases:
        rec = record(h, releases[tid])
        assert rec["status"] == "rejected", f"{tid}: {rec['status']}: {rec['error']}"
        assert rec["error"].startswith(f"invalid manifests from template '{tid}' ("), rec["error"]
        assert "against the schema of the default cluster (v1.32.0)" in rec["error"]
        names_the_error(rec["error"], field, value, line, message)
        events = [(e["event"], e["stage"]) for e in rec["timeline"]]
        assert events == [("queued", "render"), ("rejected", "render")], (tid, events)
        assert rec["started_at"] is None, (tid, rec["started_at"])
    # Nothing reached the cluster: no apply, not even the namespace.
    namespaces = {f"ns-{svc[-10:]}" for svc in services.values()}
    assert not [a for a in applies(h) if a["namespace"] in namespaces]
    got = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "get",
                          "namespaces", "-o", "name"], env=h.env, check=True,
                         capture_output=True, text=True).stdout
    assert not namespaces & {n.split("/", 1)[1] for n in got.split()}
    # The lock was freed: a valid release of one of these services starts and succeeds.
    svc = services["port-placeholder-quoted"]
    h.relctl("template", "sync", str(DEMO))
    h.relctl("service", "set", svc, "--env", "prod", "template=web")
    rid = deploy(h, svc, "1.0.0")
    assert wait_status(h, rid, {"succeeded", "failed", "rejected"})["status"] == "succeeded"


def check(h, path, *args, env=None):
    proc = subprocess.run([str(bin_path("relctl")), "template", "check", str(path), *args,
                           "--output", "json"], env=env or h.env, capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def test_template_check_on_the_corpus(harness):
    """For a template repository's CI: exit 1 with the errors, 0 when valid; without a
    database it renders sample values, without a cluster it checks the built-in schema."""
    h = harness
    offline = {k: v for k, v in h.env.items()
               if k not in ("RELFLEET_PG_DSN", "RELFLEET_KUBECONFIG")}
    for tid, path, settings, field, value, line, message in corpus():
        if settings:
            continue  # its placeholders need the service's values: checked with --service below
        code, out, err = check(h, path, env=offline)
        assert code == 1, (tid, code, out, err)
        assert out["template"] == tid and out["valid"] is False
        (chk,) = out["checks"]
        assert chk["service"] is None and "built-in schema (Kubernetes API 1.22" in chk["schema"]
        text = "; ".join(f"{e['object']} {e['field']}" + (
            f": {json.dumps(e['value'])}" if "value" in e and not isinstance(
                e["value"], (dict, list)) else "") + f" (template line {e['line']}): "
            + e["message"] for e in chk["errors"])
        names_the_error(text, field, value, line, message)
    code, out, err = check(h, DEMO / "web.yaml", env=offline)
    assert code == 0 and out["valid"] is True, (out, err)


def test_template_check_and_sync_use_each_services_values(harness, tmp_path):
    h = harness
    tpl = RENDER_CORPUS / "label-value-placeholder.yaml"
    good, bad = h.unique_service("rv"), h.unique_service("rv")
    (tmp_path / "tiered.yaml").write_text(tpl.read_text())
    h.relctl("service", "set", good, "--env", "prod", "template=tiered",
             f"namespace=ns-{good[-10:]}", "tier=front")
    h.relctl("service", "set", bad, "--env", "test", "template=tiered",
             f"namespace=ns-{bad[-10:]}", "tier=front end")
    h.relctl("template", "sync", str(tmp_path))
    # check with one service: its values, its cluster's schema
    code, out, _ = check(h, tmp_path / "tiered.yaml", "--service", good, "--env", "prod")
    assert code == 0 and out["checks"][0]["schema"].startswith("the schema of the default cluster")
    code, out, _ = check(h, tmp_path / "tiered.yaml", "--service", bad, "--env", "test")
    assert code == 1 and out["checks"][0]["errors"][0]["field"] == "metadata.labels.tier"
    # without --service: every service that uses the template
    code, out, _ = check(h, tmp_path / "tiered.yaml")
    assert code == 1 and sorted((c["service"], c["valid"]) for c in out["checks"]) == sorted(
        [(good, True), (bad, False)])
    # text output, and sync's report (the template is stored: exit 0)
    proc = h.relctl("template", "check", str(tmp_path / "tiered.yaml"), check=False)
    assert proc.returncode == 1
    assert f"valid     tiered for {good} in prod" in proc.stdout, proc.stdout
    assert (f"invalid   tiered for {bad} in test (1 error, against the schema of the default"
            f" cluster (v1.32.0)):") in proc.stdout, proc.stdout
    assert ("metadata.labels.tier: \"front end\" (template line 7): a valid label"
            in proc.stdout), proc.stdout
    (tmp_path / "tiered.yaml").write_text(tpl.read_text() + "# touched\n")
    proc = h.relctl("template", "sync", str(tmp_path))
    assert proc.stdout.startswith("changed   tiered "), proc.stdout
    assert f"invalid   tiered for {bad} in test (1 error):" in proc.stdout, proc.stdout
    assert f"for {good} " not in proc.stdout
    assert h.relctl("template", "check", "--service", check=False).returncode == 2


def test_unreachable_cluster_keeps_the_release_queued_and_retries(harness):
    """No schema, no verdict: a cluster that does not answer is retried, never a rejection."""
    h = harness
    h.relctl("template", "sync", str(DEMO))
    svc = h.unique_service("rv")
    # `cluster=kubesim` names the context explicitly: a cache entry of its own, not read yet
    h.relctl("service", "set", svc, "--env", "prod", "template=web", "cluster=kubesim",
             f"namespace=ns-{svc[-10:]}", "replicas=1")
    kube_fault(h, {"down": True})
    try:
        rid = deploy(h, svc, "1.0.0")
        logs = h.stack.state_dir / "logs"
        h.wait_for(lambda: any(
            "cannot read the schema of cluster 'kubesim'" in line and rid in line
            for p in logs.glob("render-*.log") for line in p.open(errors="replace")),
            30, "render to retry for the schema")
        assert record(h, rid)["status"] == "queued"
    finally:
        kube_fault(h, {"down": False})
    rec = wait_status(h, rid, {"succeeded", "failed", "rejected"}, timeout=60)
    assert rec["status"] == "succeeded", rec


def test_warn_mode_records_the_errors_and_goes_on(stack_factory, tmp_path):
    """render_validation=warn: the errors go into the timeline, the release is applied (and
    here the API server refuses it, as the check said)."""
    from harness import Harness
    h = Harness(stack_factory.start({"RELFLEET_RENDER_VALIDATION": "warn"}))
    svc = h.unique_service("rv")
    h.relctl("service", "set", svc, "--env", "prod", "template=port-placeholder-quoted",
             f"namespace=ns-{svc[-10:]}", "replicas=1")
    (tmp_path / "port-placeholder-quoted.yaml").write_text(
        (RENDER_CORPUS / "port-placeholder-quoted.yaml").read_text())
    h.relctl("template", "sync", str(tmp_path))
    rid = deploy(h, svc, "1.0.0")
    rec = wait_status(h, rid, {"succeeded", "failed", "rejected"})
    assert rec["status"] == "failed" and "cannot unmarshal string" in rec["error"], rec
    (applying,) = [e for e in rec["timeline"] if e["event"] == "applying"]
    assert "invalid manifests from template 'port-placeholder-quoted' (1 error" in \
        applying["message"], applying
    assert "containerPort: \"8080\" (template line 18)" in applying["message"], applying
