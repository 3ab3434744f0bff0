"""kubesim decodes and validates like the API server: wrong types (400), unknown fields by
fieldValidation, validation rules (422), the corpus of invalid manifests through the real
kubectl, and the OpenAPI documents kubectl explain reads."""
import glob
import json
import os

import pytest
import yaml

from kubesim_fixture import deployment_yaml, kubesim

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "kubesim-invalid")
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURES, "*.yaml")))
PLURAL = {"Deployment": "apps/v1/namespaces/default/deployments",
          "Service": "v1/namespaces/default/services"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with kubesim(tmp_path_factory.mktemp("kubesim") / "state", "--time-scale", "50") as k:
        yield k


def collection(k, kind):
    path = PLURAL[kind]
    return f"{k.url}/{'apis' if '/' in path.split('/namespaces')[0] else 'api'}/{path}"


def test_the_corpus_has_a_dozen_classes():
    assert len(CASES) >= 12
    codes = {json.load(open(os.path.join(FIXTURES, c + ".expect.json")))["code"] for c in CASES}
    assert codes == {400, 422}


@pytest.mark.parametrize("case", CASES)
def test_invalid_manifest_is_rejected_with_the_api_servers_status(sim, case):
    path = os.path.join(FIXTURES, case + ".yaml")
    with open(path) as f:
        obj = yaml.safe_load(f)
    with open(os.path.join(FIXTURES, case + ".expect.json")) as f:
        want = json.load(f)
    name = obj["metadata"]["name"]
    r = sim.session().post(collection(sim, obj["kind"]), params={"fieldValidation": "Strict"}, json=obj)
    st = r.json()
    assert (r.status_code, st["reason"], st["message"]) == (want["code"], want["reason"], want["message"])
    assert st["details"]["causes"][0]["field"] == want["field"]
    # the real kubectl apply says the same and nothing is stored
    res = sim.kubectl("apply", "-f", path, check=False)
    assert res.returncode == 1
    if want["code"] == 400:
        assert res.stderr.strip() == (f'Error from server (BadRequest): error when creating "{path}": '
                                      f'{want["message"]}')
    else:
        causes = st["details"]["causes"]
        lines = [f'{c["field"]}: {c["message"]}' for c in causes]
        text = lines[0] if len(lines) == 1 else "\n" + "\n".join("* " + l for l in lines)
        assert res.stderr.strip() == f'The {obj["kind"]} "{name}" is invalid: {text}'.strip()
    got = sim.kubectl("get", obj["kind"].lower(), name, check=False)
    assert "NotFound" in got.stderr


def bogus(name):
    return deployment_yaml(name, "nginx:1.27", replicas=1, extra_spec="  bogusField: 1\n")


def test_unknown_fields_follow_field_validation(sim, tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(bogus("fv"))
    # kubectl's default is Strict, for client-side and server-side apply
    for args in ([], ["--server-side"]):
        res = sim.kubectl("apply", *args, "-f", str(f), check=False)
        assert res.returncode == 1
        assert 'strict decoding error: unknown field "spec.bogusField"' in res.stderr
    res = sim.kubectl("apply", "--validate=warn", "-f", str(f))
    assert 'Warning: unknown field "spec.bogusField"' in res.stderr
    d = sim.get_json("deployment", "fv")
    assert "bogusField" not in d["spec"]
    # an update (apply of an existing object) and the patches: Strict refuses, Ignore drops
    res = sim.kubectl("apply", "-f", str(f), check=False)
    assert 'strict decoding error: unknown field "spec.bogusField"' in res.stderr
    res = sim.kubectl("patch", "deployment", "fv", "--type=merge", "-p",
                      '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"x","bogus":1}]}}}}',
                      check=False)
    assert 'unknown field "spec.template.spec.containers[0].bogus"' in res.stderr
    res = sim.kubectl("apply", "--validate=false", "-f", str(f))
    assert res.returncode == 0 and "Warning" not in res.stderr
    s = sim.session()
    url = collection(sim, "Deployment") + "/fv"
    r = s.patch(url, data='{"spec":{"bogusField":2}}', headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200
    assert r.headers["Warning"] == '299 - "unknown field \\"spec.bogusField\\""'
    assert "bogusField" not in r.json()["spec"]
    r = s.patch(url, params={"fieldValidation": "Ignore"}, data='{"spec":{"bogusField":2}}',
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and "Warning" not in r.headers
    r = s.patch(url, params={"fieldValidation": "Nope"}, data='{}',
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 400


def test_wrong_types_are_refused_on_update_and_patch(sim, tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(deployment_yaml("types", "nginx:1.27", replicas=1))
    sim.kubectl("apply", "-f", str(f))
    res = sim.kubectl("patch", "deployment", "types", "--type=merge", "-p", '{"spec":{"replicas":"2"}}',
                      check=False)
    assert res.returncode == 1
    assert ('Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
            'string into Go struct field DeploymentSpec.spec.replicas of type int32') in res.stderr
    f.write_text(deployment_yaml("types", "nginx:1.27", replicas=1).replace("8080", '"8080"'))
    res = sim.kubectl("apply", "--server-side", "-f", str(f), check=False)
    assert "of type int32" in res.stderr
    assert sim.get_json("deployment", "types")["spec"]["replicas"] == 1


def test_a_quoted_port_placeholder_fails_as_on_a_real_cluster(sim, tmp_path):
    """Issue 19's first finding: containerPort "8080" and an httpGet probe port "8080"."""
    f = tmp_path / "d.yaml"
    f.write_text(deployment_yaml("quoted", "nginx:1.27", replicas=1).replace("containerPort: 8080", 'containerPort: "8080"'))
    res = sim.kubectl("apply", "-f", str(f), check=False)
    assert "cannot unmarshal string into Go struct field ContainerPort" in res.stderr
    # a probe on a named port is fine; on a port name that is all digits it is not
    good = deployment_yaml("named", "nginx:1.27", replicas=1).replace(
        "ports: [{containerPort: 8080}]",
        "ports: [{containerPort: 8080, name: http}]\n        readinessProbe: {httpGet: {path: /, port: http}}")
    f.write_text(good)
    sim.kubectl("apply", "-f", str(f))
    f.write_text(good.replace("port: http}", 'port: "8080"}'))
    res = sim.kubectl("apply", "-f", str(f), check=False)
    assert 'readinessProbe.httpGet.port: Invalid value: "8080": must contain at least one letter (a-z)' in res.stderr


def test_kubectl_explain_reads_the_schema(sim):
    res = sim.kubectl("explain", "deployment.spec.replicas")
    assert "FIELD: replicas <integer>" in res.stdout
    assert "Number of desired pods." in res.stdout
    res = sim.kubectl("explain", "deployment.spec.template.spec.containers.ports")
    assert "FIELD: ports <[]ContainerPort>" in res.stdout
    assert "containerPort\t<integer> -required-" in res.stdout
    res = sim.kubectl("explain", "svc.spec.ports.targetPort")
    assert "Number or name of the port to access on the pods" in res.stdout
    res = sim.kubectl("explain", "deployment.spec.bogusField", check=False)
    assert res.returncode == 1 and 'field "bogusField" does not exist' in res.stderr


def test_openapi_v2_and_v3_come_from_the_same_schema(sim):
    s = sim.session()
    v3 = s.get(f"{sim.url}/openapi/v3/apis/apps/v1").json()["components"]["schemas"]
    v2 = s.get(f"{sim.url}/openapi/v2", headers={"Accept": "application/json"}).json()
    spec3 = v3["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
    spec2 = v2["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
    assert spec3["replicas"] == spec2["replicas"] == {
        "type": "integer", "format": "int32", "description": spec3["replicas"]["description"]}
    assert spec3["template"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}]
    assert spec2["template"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
    containers = v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert (containers["x-kubernetes-patch-merge-key"], containers["x-kubernetes-patch-strategy"]) == ("name", "merge")
    assert v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "version": "v1", "kind": "Deployment"}]
    # kubectl asks for the protobuf form only, and falls back to its own types on a refusal
    r = s.get(f"{sim.url}/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert r.status_code == 406


def test_what_kubesim_stores_decodes_strictly(sim, tmp_path):
    """A client that writes back what it read (kubectl replace, edit) meets no unknown field."""
    f = tmp_path / "d.yaml"
    f.write_text(deployment_yaml("roundtrip", "nginx:1.27", replicas=2))
    sim.kubectl("apply", "-f", str(f))
    sim.kubectl("rollout", "status", "deployment/roundtrip", "--timeout=60s")
    s = sim.session()
    checked = 0
    for base in ("/apis/apps/v1/namespaces/default/deployments", "/apis/apps/v1/namespaces/default/replicasets",
                 "/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/services",
                 "/api/v1/namespaces/default/events", "/api/v1/namespaces"):
        for o in s.get(sim.url + base).json()["items"]:
            r = s.put(f"{sim.url}{base}/{o['metadata']['name']}", json=o,
                      params={"fieldValidation": "Strict", "dryRun": "All"})
            assert r.status_code == 200 and "Warning" not in r.headers, (base, r.text)
            checked += 1
    assert checked >= 8
