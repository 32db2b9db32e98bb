"""The SlotImageCheck CRD on the real API server: bad specs refused naming the field, the spec immutable,
defaults applied, `kubectl explain` and the printer columns complete, and every status the contract
describes (the Argo CD fixtures) stored as written.

No operator runs here: the reconcile side is the operator's (docs/design.md §2.5); these tests hold the
schema it writes against.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import cluster
from tests.integration import slots

pytestmark = pytest.mark.integration

CRD_FILE = cluster.REPO / "crds" / "slotimagechecks.woved.dev.yaml"
TESTDATA = cluster.REPO / "charts" / "slot-operator" / "argocd" / "SlotImageCheck" / "testdata"
PLURAL = "slotimagechecks"
IMAGE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"


def _body(name: str = "c", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{slots.GROUP}/{slots.VERSION}",
        "kind": "SlotImageCheck",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, **spec},
    }


def _custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _refusal(call: Any) -> str:
    with pytest.raises(client.ApiException) as refused:
        call()
    assert refused.value.status == 422, refused.value.body
    return str(json.loads(refused.value.body)["message"])


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"image": "ghcr.io/x/agent shell:1"}, "spec.image", "should match"),
        ({"image": ""}, "spec.image", "at least 1 chars long"),
        ({"runAsUser": 0}, "spec.runAsUser", "greater than or equal to 1"),
        ({"runAsGroup": 2147483648}, "spec.runAsGroup", "less than or equal to 2147483647"),
        ({"timeout": "2s"}, "spec.timeout", "timeout must be a duration between 5s and 1h"),
        ({"timeout": "soon"}, "spec.timeout", "should match"),
        ({"ttlAfterFinished": "721h"}, "spec.ttlAfterFinished", "ttlAfterFinished must be a duration between 1m"),
        ({"selector": {"matchLabels": {"not a key": "x"}}}, "spec.selector.matchLabels", "must be a label key"),
        ({"selector": {"matchLabels": {"pool": "a b"}}}, "spec.selector.matchLabels.pool", "should match"),
        ({"selector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
         "spec.selector.matchExpressions[0]", "operator In needs at least one value"),
        ({"selector": {"matchExpressions": [{"key": "pool", "operator": "Exists", "values": ["a"]}]}},
         "spec.selector.matchExpressions[0]", "operator Exists takes no values"),
        ({"selector": {"matchExpressions": [{"key": "pool", "operator": "Near", "values": ["a"]}]}},
         "spec.selector.matchExpressions[0].operator", "Unsupported value"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_field(
    spec: dict[str, Any], field: str, message: str, api_client: client.ApiClient, namespace: str
) -> None:
    error = _refusal(
        lambda: _custom(api_client).create_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, PLURAL, _body(**spec), dry_run="All"
        )
    )
    assert f"{field}: " in error, error
    assert message in error, error


def test_defaults_and_the_immutable_spec(api_client: client.ApiClient, namespace: str) -> None:
    """generateName works, ttlAfterFinished and status get their defaults, and no field of the spec may change."""
    body = _body(selector={"matchLabels": {"pool": "codex"}}, runAsUser=10001, runAsGroup=10001)
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "check-"
    api = _custom(api_client)
    created = api.create_namespaced_custom_object(slots.GROUP, slots.VERSION, namespace, PLURAL, body)
    name = created["metadata"]["name"]
    assert name.startswith("check-")
    assert created["spec"]["ttlAfterFinished"] == "24h"
    assert created["status"] == {"observedGeneration": 0}
    for change in ({"image": IMAGE + "-2"}, {"selector": None}, {"runAsUser": 1000}, {"ttlAfterFinished": "1h"}):
        error = _refusal(
            lambda change=change: api.patch_namespaced_custom_object(
                slots.GROUP, slots.VERSION, namespace, PLURAL, name, {"spec": change}
            )
        )
        assert "spec: Invalid value" in error, error
        assert "spec is immutable once created; a new candidate is a new SlotImageCheck" in error, error
    # Labels and annotations are not the spec; the status is the operator's to write.
    labelled = api.patch_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, PLURAL, name, {"metadata": {"labels": {"pr": "42"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    status = api.patch_namespaced_custom_object_status(
        slots.GROUP, slots.VERSION, namespace, PLURAL, name, {"status": {"observedGeneration": 1, "phase": "Pending"}}
    )
    assert status["status"]["phase"] == "Pending"


def test_kubectl_explain_and_get_wide(kube_cluster: cluster.Cluster, api_client: client.ApiClient,
                                      namespace: str) -> None:  # fmt: skip
    def kubectl(*args: str) -> str:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kube_cluster.kubeconfig}", *args],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for field, definition in schema["properties"][part]["properties"].items():
            out = kubectl("explain", f"sic.{part}.{field}")
            first_words = " ".join(definition["description"].split()[:6])
            assert first_words in " ".join(out.split()), (part, field, out)
    _custom(api_client).create_namespaced_custom_object(slots.GROUP, slots.VERSION, namespace, PLURAL, _body())
    header = kubectl("get", "sic", "-n", namespace, "-o", "wide").splitlines()[0].split()
    assert header == ["NAME", "IMAGE", "PHASE", "SLOTS", "READY", "AGE", "FAILED", "MESSAGE"]


@pytest.mark.parametrize("fixture", sorted(p.name for p in TESTDATA.glob("*.yaml")))
def test_every_status_of_the_contract_is_stored_as_written(
    fixture: str, api_client: client.ApiClient, namespace: str
) -> None:
    """The hand-written statuses the Argo CD and kstatus tests read are valid for the API server: nothing refused,
    nothing pruned. So the reconcile side can write exactly these shapes."""
    written = yaml.safe_load((TESTDATA / fixture).read_text())
    api = _custom(api_client)
    body = {**written, "metadata": {"name": written["metadata"]["name"]}}
    body.pop("status", None)
    api.create_namespaced_custom_object(slots.GROUP, slots.VERSION, namespace, PLURAL, body)
    stored = api.replace_namespaced_custom_object_status(
        slots.GROUP, slots.VERSION, namespace, PLURAL, written["metadata"]["name"],
        {**api.get_namespaced_custom_object(slots.GROUP, slots.VERSION, namespace, PLURAL,
                                            written["metadata"]["name"]), "status": written["status"]},
    )  # fmt: skip
    assert stored["status"] == written["status"]
    assert stored["spec"] == {"ttlAfterFinished": "24h", **written["spec"]}


@pytest.mark.parametrize("directory", ["flux/checks", "argocd/agents-with-check"])
def test_the_recipes_checks_are_accepted(directory: str, api_client: client.ApiClient, namespace: str) -> None:
    """The SlotImageCheck of each GitOps recipe, rendered as Flux and Argo CD render it, passes the API server."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(cluster.REPO / "examples" / "gitops" / directory)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    (check,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "SlotImageCheck"]
    check["metadata"]["namespace"] = namespace
    stored = _custom(api_client).create_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, PLURAL, check, dry_run="All"
    )
    assert stored["spec"] == check["spec"]
