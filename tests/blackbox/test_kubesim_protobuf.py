"""kubesim accepts the protobuf request bodies of kubectl's typed commands (the k8s\\0 envelope
with a runtime.Unknown, issue 19 part 2): create namespace|deployment|configmap|secret, scale,
set image and rollout undo through the real kubectl, and malformed bodies answer 400."""
import base64
import json

import pytest

from kubesim_fixture import kubesim

PB = "application/vnd.kubernetes.protobuf"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with kubesim(tmp_path_factory.mktemp("kubesim") / "state", "--time-scale", "50") as k:
        yield k


# ---- a minimal protobuf writer, for bodies kubectl does not send ----

def varint(v):
    out = b""
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def ld(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def vi(num, v):
    return varint(num << 3) + varint(v)


def envelope(api_version, kind, raw):
    return b"k8s\x00" + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, "") + ld(4, "")


def entry(k, v):
    return ld(1, k) + ld(2, v)


def sent_protobuf(res):
    """kubectl -v=8 logs the request headers: the write really went as protobuf."""
    return f"Content-Type: {PB}" in res.stderr


def test_create_namespace_sends_protobuf_and_is_stored(sim):
    res = sim.kubectl("-v=8", "create", "namespace", "pb-ns")
    assert sent_protobuf(res)
    ns = sim.get_json("namespace", "pb-ns")
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == "pb-ns"
    assert ns["status"]["phase"] == "Active"
    # the zero values protobuf carries (generateName "", generation 0, an empty
    # creationTimestamp) are not stored as such
    assert "generateName" not in ns["metadata"]
    assert ns["metadata"]["creationTimestamp"].endswith("Z")


def test_create_deployment_scale_set_image_and_rollout_undo(sim):
    res = sim.kubectl("-v=8", "create", "deployment", "pb-d", "--image=nginx:1.27", "--replicas=2",
                      "--port=8080")
    assert sent_protobuf(res)
    d = sim.get_json("deployment", "pb-d")
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"app": "pb-d"}}
    assert d["spec"]["template"]["metadata"]["labels"] == {"app": "pb-d"}
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert (c["name"], c["image"], c["ports"]) == ("nginx", "nginx:1.27",
                                                   [{"containerPort": 8080, "protocol": "TCP"}])
    assert "stdin" not in c and "hostNetwork" not in d["spec"]["template"]["spec"]
    sim.kubectl("rollout", "status", "deployment/pb-d", "--timeout=30s")

    sim.kubectl("scale", "deployment", "pb-d", "--replicas=3")
    assert sim.get_json("deployment", "pb-d")["spec"]["replicas"] == 3
    sim.kubectl("set", "image", "deployment/pb-d", "nginx=nginx:1.28")
    img = lambda: sim.get_json("deployment", "pb-d")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert img() == "nginx:1.28"
    sim.kubectl("rollout", "status", "deployment/pb-d", "--timeout=30s")
    res = sim.kubectl("rollout", "undo", "deployment/pb-d")
    assert "rolled back" in res.stdout
    assert img() == "nginx:1.27"
    sim.kubectl("rollout", "status", "deployment/pb-d", "--timeout=30s")
    assert sim.get_json("deployment", "pb-d")["status"]["readyReplicas"] == 3


def test_create_deployment_with_zero_replicas_keeps_zero(sim):
    sim.kubectl("create", "deployment", "pb-zero", "--image=nginx:1.27", "--replicas=0")
    assert sim.get_json("deployment", "pb-zero")["spec"]["replicas"] == 0


def test_create_configmap_and_secret_from_literals(sim):
    res = sim.kubectl("-v=8", "create", "configmap", "pb-cm", "--from-literal=a=b", "--from-literal=k=v w")
    assert sent_protobuf(res)
    assert sim.get_json("configmap", "pb-cm")["data"] == {"a": "b", "k": "v w"}
    res = sim.kubectl("-v=8", "create", "secret", "generic", "pb-s", "--from-literal=user=admin",
                      "--from-literal=bin=\u00e9\x01")
    assert sent_protobuf(res)
    s = sim.get_json("secret", "pb-s")
    assert s["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in s["data"].items()} == {"user": "admin", "bin": "\u00e9\x01"}


def post_handmade_deployment(sim, name):
    """A Deployment written by hand in protobuf: an IntOrString, quantities and a time."""
    meta = ld(1, name) + ld(11, entry("app", name)) + ld(8, vi(1, 1700000000))
    container = (ld(1, "app") + ld(2, "nginx:1.27") +
                 ld(8, ld(1, entry("cpu", ld(1, "250m"))) + ld(2, entry("memory", ld(1, "64Mi")))) +
                 ld(11, ld(1, ld(2, ld(1, "/healthz") + ld(2, vi(1, 1) + ld(3, "http")))) + vi(2, 5)))
    spec = (vi(1, 2) + ld(2, ld(1, entry("app", name))) +
            ld(3, ld(1, ld(11, entry("app", name))) + ld(2, ld(2, container))) +
            ld(4, ld(1, "RollingUpdate") + ld(2, ld(1, vi(1, 0) + vi(2, 0)) + ld(2, vi(1, 1) + ld(3, "50%")))))
    body = envelope("apps/v1", "Deployment", ld(1, meta) + ld(2, spec))
    return sim.session().post(f"{sim.url}/apis/apps/v1/namespaces/default/deployments", data=body,
                              headers={"Content-Type": PB, "Accept": "application/json"})


def test_handmade_deployment_with_intorstring_quantity_and_time(sim):
    r = post_handmade_deployment(sim, "pb-hand")
    assert r.status_code == 201, r.text
    d = r.json()
    ru = d["spec"]["strategy"]["rollingUpdate"]
    assert (ru["maxUnavailable"], ru["maxSurge"]) == (0, "50%")
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"] == {"limits": {"cpu": "250m"}, "requests": {"memory": "64Mi"}}
    probe = c["readinessProbe"]
    assert (probe["httpGet"]["path"], probe["httpGet"]["port"], probe["initialDelaySeconds"]) == \
        ("/healthz", "http", 5)
    assert d["metadata"]["labels"] == {"app": "pb-hand"}


MALFORMED = {
    "no-prefix": (b'{"kind":"Namespace"}', "4-byte prefix"),
    "truncated-length": (b"k8s\x00\x0a\x7f", "length-delimited field longer than its message"),
    "bad-wire-type": (b"k8s\x00\x0f", "illegal wire type 7"),
    "no-kind": (b"k8s\x00" + ld(2, ld(1, ld(1, "x"))), "no kind"),
    "bad-utf8": (envelope("v1", "Namespace", ld(1, ld(1, b"\xff\xfe"))), "metadata.name: string field is not valid UTF-8"),
    "truncated-inner": (envelope("v1", "Namespace", ld(1, b"\x0a\x05ab")), "metadata: length-delimited"),
    "wrong-wire-type": (envelope("apps/v1", "Deployment", ld(2, ld(1, "x"))),
                        "spec.replicas: wrong wire type for a varint field"),
    "unknown-field": (envelope("v1", "Namespace", ld(9, "x")),
                      "kubesim does not decode field 9 of core.v1.Namespace from protobuf"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_protobuf_answers_400(sim, case):
    body, words = MALFORMED[case]
    path = "apis/apps/v1/namespaces/default/deployments" if "Deployment" in repr(body) else "api/v1/namespaces"
    r = sim.session().post(f"{sim.url}/{path}", data=body, headers={"Content-Type": PB})
    assert r.status_code == 400, r.text
    st = r.json()
    assert (st["kind"], st["reason"]) == ("Status", "BadRequest")
    assert words in st["message"]
    assert sim.proc.poll() is None


def test_a_kind_kubesim_does_not_decode_answers_415(sim):
    body = envelope("v1", "Service", ld(1, ld(1, "svc")))
    r = sim.session().post(f"{sim.url}/api/v1/namespaces/default/services", data=body,
                           headers={"Content-Type": PB})
    assert r.status_code == 415
    assert "not Service: send it as application/json" in r.json()["message"]


def test_kubectl_gets_protobuf_answers_and_json_where_kubesim_has_no_table(sim):
    res = sim.kubectl("-v=8", "create", "namespace", "pb-answer")
    assert f"Response\" status=\"201 Created\"" in res.stderr or "201 Created" in res.stderr
    # request and answer both protobuf
    assert res.stderr.count(f"Content-Type: {PB}") == 2, res.stderr
    s = sim.session()
    url = f"{sim.url}/api/v1/namespaces/pb-answer"
    assert s.get(url, headers={"Accept": "application/json"}).headers["Content-Type"] == "application/json"
    assert s.get(url, headers={"Accept": f"application/json,{PB}"}).headers["Content-Type"] == "application/json"
    r = s.get(url, headers={"Accept": f"{PB},application/json"})
    assert r.headers["Content-Type"] == PB and r.content.startswith(b"k8s\x00")
    # lists, Status objects and kinds without a table stay JSON
    for u, code in ((f"{sim.url}/api/v1/namespaces", 200), (f"{sim.url}/api/v1/namespaces/none", 404),
                    (f"{sim.url}/api/v1/namespaces/default/services", 200)):
        r = s.get(u, headers={"Accept": f"{PB},application/json"})
        assert (r.status_code, r.headers["Content-Type"]) == (code, "application/json")


@pytest.fixture(scope="module")
def written_back(sim):
    """The objects the next test writes back, its own (so it runs alone too): a Deployment
    kubectl created, scaled and changed, one written by hand, a ConfigMap, a Secret and a
    Namespace."""
    sim.kubectl("create", "namespace", "pbw-ns")
    sim.kubectl("create", "deployment", "pbw-d", "--image=nginx:1.27", "--replicas=2")
    sim.kubectl("rollout", "status", "deployment/pbw-d", "--timeout=30s")
    sim.kubectl("scale", "deployment", "pbw-d", "--replicas=3")
    sim.kubectl("set", "image", "deployment/pbw-d", "nginx=nginx:1.28")
    sim.kubectl("rollout", "status", "deployment/pbw-d", "--timeout=30s")
    assert post_handmade_deployment(sim, "pbw-hand").status_code == 201
    sim.kubectl("create", "configmap", "pbw-cm", "--from-literal=a=b", "--from-literal=k=v w")
    sim.kubectl("create", "secret", "generic", "pbw-s", "--from-literal=user=admin",
                "--from-literal=bin=\u00e9\x01")


@pytest.mark.parametrize("path", ["apis/apps/v1/namespaces/default/deployments/pbw-d",
                                  "apis/apps/v1/namespaces/default/deployments/pbw-hand",
                                  "apis/apps/v1/namespaces/default/deployments/pbw-d/scale",
                                  "api/v1/namespaces/default/configmaps/pbw-cm",
                                  "api/v1/namespaces/default/secrets/pbw-s",
                                  "api/v1/namespaces/pbw-ns"])
def test_protobuf_answer_written_back_is_a_no_op(sim, written_back, path):
    """What kubesim encodes decodes to the same object: a PUT of the protobuf it answered keeps
    the resourceVersion (a no-op write) and the JSON form is unchanged."""
    s = sim.session()
    url = f"{sim.url}/{path}"
    before = s.get(url, headers={"Accept": "application/json"}).json()
    r = s.get(url, headers={"Accept": PB})
    assert r.status_code == 200 and r.headers["Content-Type"] == PB
    put = s.put(url, params={"fieldValidation": "Strict"}, data=r.content,
                headers={"Content-Type": PB, "Accept": "application/json"})
    assert put.status_code == 200, put.text
    assert "Warning" not in put.headers
    assert put.json()["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    after = s.get(url, headers={"Accept": "application/json"}).json()
    if path.endswith("/scale") or "deployments" not in path:
        assert after == before
    else:
        assert after["spec"] == before["spec"] and after["metadata"] == before["metadata"]


# ---- a protobuf reader of its own, to check kubesim's answers from outside ----

def read_fields(buf):
    """field number -> list of values (int for varints, bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
            assert len(v) == n, "length past the end"
        else:
            raise AssertionError(f"wire type {wt} of field {num}")
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def test_protobuf_answer_decodes_as_upstream_numbers_say(sim):
    """A client decoding the k8s\\0 envelope by the upstream field numbers (runtime.Unknown,
    apps.v1.Deployment, meta.v1.ObjectMeta, core.v1.PodSpec/Container) reads the object the
    JSON answer shows."""
    s = sim.session()
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments/pb-d"
    j = s.get(url, headers={"Accept": "application/json"}).json()
    r = s.get(url, headers={"Accept": f"{PB},application/json"})
    assert r.headers["Content-Type"] == PB
    assert r.content[:4] == b"k8s\x00"
    unknown = read_fields(r.content[4:])
    type_meta = read_fields(unknown[1][0])
    assert (type_meta[1], type_meta[2]) == ([b"apps/v1"], [b"Deployment"])
    assert unknown.get(3, [b""]) == [b""] and unknown.get(4, [b""]) == [b""]  # contentEncoding, contentType
    dep = read_fields(unknown[2][0])
    meta, spec, status = (read_fields(dep[n][0]) for n in (1, 2, 3))
    assert meta[1] == [b"pb-d"] and meta[3] == [b"default"]
    assert meta[6] == [j["metadata"]["resourceVersion"].encode()] and meta[7] == [j["metadata"]["generation"]]
    assert spec[1] == [j["spec"]["replicas"]]
    template = read_fields(spec[3][0])
    labels = [read_fields(e) for e in read_fields(template[1][0])[11]]  # map entries key=1 value=2
    assert [(e[1][0], e[2][0]) for e in labels] == [(b"app", b"pb-d")]
    pod = read_fields(template[2][0])
    (c,) = [read_fields(x) for x in pod[2]]
    assert c[1] == [b"nginx"] and c[2] == [j["spec"]["template"]["spec"]["containers"][0]["image"].encode()]
    port = read_fields(c[6][0])
    assert port[3] == [8080] and port[4] == [b"TCP"]
    assert status[7] == [j["status"]["readyReplicas"]] and status[1] == [j["status"]["observedGeneration"]]
    conds = [read_fields(x) for x in status[6]]
    assert sorted(x[1][0] for x in conds) == [b"Available", b"Progressing"]
