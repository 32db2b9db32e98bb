"""Hostile and careless specs on the real API server: rejected with a message naming the field, or normalised.

The same cases (tests/spec_cases.py) run against logic/spec.py in tests/unit/operator/test_spec.py, so the
CRD's CEL rules and the operator give the same answer.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import cluster, gitops
from tests.integration import slots
from tests.integration.kubewait import NotYet, wait_for
from tests.integration.slots import condition, create_slot, wait_slot, wait_verdict, write_file
from tests.spec_cases import ACCEPTED, REJECTED

pytestmark = pytest.mark.integration

CRD_NAME = "slots.woved.dev"
CRD_FILE = cluster.REPO / "crds" / "slots.woved.dev.yaml"


def _body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{slots.GROUP}/{slots.VERSION}",
        "kind": "Slot",
        "metadata": {"name": "s"},
        "spec": {"agent": "codex", "claimName": "home", "image": slots.CODEX_IMAGE, **spec},
    }


def _create(api: client.ApiClient, namespace: str, body: dict[str, Any], *, dry_run: bool = True) -> str | None:
    """None if the API server accepts the Slot, else its error message.

    409 AlreadyExists also means accepted: validation passed and only the name was taken (a dry
    run of a Slot that a test stored earlier, while a CRD change is not yet in effect).
    """
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, slots.PLURAL, body, dry_run="All" if dry_run else None
        )
    except client.ApiException as exc:
        if exc.status == 409 and dry_run:
            return None
        if exc.status != 422:
            raise
        return str(json.loads(exc.body)["message"])
    return None


@pytest.mark.parametrize(("raw", "message"), list(REJECTED.items()))
def test_mount_path_rejected_in_any_spelling(
    raw: str, message: str, api_client: client.ApiClient, namespace: str
) -> None:
    error = _create(api_client, namespace, _body(mountPath=raw))
    assert error is not None, f"{raw!r} was accepted"
    assert f'spec.mountPath: Invalid value: "{raw}": {message}' in error
    assert error.count("spec.mountPath") == 1, error  # one clear answer, not every rule that also fails


@pytest.mark.parametrize("raw", list(ACCEPTED))
def test_mount_path_accepted(raw: str, api_client: client.ApiClient, namespace: str) -> None:
    assert _create(api_client, namespace, _body(mountPath=raw)) is None


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"env": [{"name": "HOME", "value": "/root"}]}, "spec.env", "HOME are set by the operator"),
        ({"env": [{"name": "X"}, {"name": "AGENT_MODE", "value": "x"}]}, "spec.env", "set by the operator"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "spec.resources.limits", "must be a Kubernetes quantity"),
        ({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "256Mi"}}}, "spec.resources.requests",
         "every request must be at most its limit"),
        ({"interval": "30s"}, "spec.interval", "between 1m and 720h"),
        ({"runAsGroup": 0}, "spec.runAsGroup", "should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_other_rules_name_the_field(
    spec: dict[str, Any], field: str, message: str, api_client: client.ApiClient, namespace: str
) -> None:
    error = _create(api_client, namespace, _body(**spec))
    assert error is not None
    assert f"{field}: " in error, error
    assert message in error, error


def test_the_probe_mounts_the_normalised_path(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    write_file(claim("home"), ".codex/auth.json", json.dumps({"tokens": {"access_token": "a"}}))
    operator()
    create_slot(api_client, namespace, "s", claim="home", mountPath="//home/./codex//")
    wait_verdict(api_client, namespace, "s", "Ready")
    container = slots.probe_jobs(api_client, namespace)[0].spec.template.spec.containers[0]
    assert container.volume_mounts[0].mount_path == "/home/codex"
    assert {e.name: e.value for e in container.env}["HOME"] == "/home/codex"


def test_kubectl_explain_documents_every_spec_field(kube_cluster: cluster.Cluster) -> None:
    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for field, definition in schema["properties"]["spec"]["properties"].items():
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={kube_cluster.kubeconfig}", "explain", f"slots.spec.{field}"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        first_words = " ".join(definition["description"].split()[:6])
        assert first_words in " ".join(out.split()), (field, out)


def _install_crd(api: client.ApiextensionsV1Api, *, mount_path_rules: bool) -> None:
    body = yaml.safe_load(CRD_FILE.read_text())
    if not mount_path_rules:
        del body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mountPath"][
            "x-kubernetes-validations"
        ]
    body["metadata"]["resourceVersion"] = api.read_custom_resource_definition(CRD_NAME).metadata.resource_version
    api.replace_custom_resource_definition(CRD_NAME, body)


@pytest.fixture
def crd_without_mount_path_rules(api_client: client.ApiClient, namespace: str) -> Iterator[Callable[[], None]]:
    """The Slot CRD as if an older release had shipped it without the mountPath rules, until `restore()`."""
    api = client.ApiextensionsV1Api(api_client)
    probe = _body(mountPath="//tmp")
    _install_crd(api, mount_path_rules=False)
    wait_for(lambda: _create(api_client, namespace, probe) is None, timeout=30, message="relaxed CRD in effect")

    def restore() -> None:
        _install_crd(api, mount_path_rules=True)

        def enforced() -> bool | NotYet:
            return True if _create(api_client, namespace, probe) is not None else NotYet("still accepted")

        wait_for(enforced, timeout=30, message="CRD rules restored")

    yield restore
    if _create(api_client, namespace, probe) is None:
        restore()


def test_slot_stored_before_the_rules_is_reported_not_probed(
    api_client: client.ApiClient,
    namespace: str,
    claim: Callable[..., pathlib.Path],
    operator: Any,
    crd_without_mount_path_rules: Callable[[], None],
) -> None:
    """An object accepted by an older schema (upgrade): the operator gives the same answer as the CEL rule."""
    claim("home")
    assert _create(api_client, namespace, _body(mountPath="/home/../tmp"), dry_run=False) is None
    crd_without_mount_path_rules()
    operator()

    slot = wait_slot(api_client, namespace, "s", lambda s: condition(s, "Stalled").get("reason") == "InvalidSpec")

    assert condition(slot, "Stalled")["message"] == f"spec.mountPath: {REJECTED['/home/../tmp']}"
    assert not slots.probe_jobs(api_client, namespace)
    assert gitops.read_one(slot).pair == ("Failed", "Degraded")
    slots.wait_event(api_client, namespace, "s", reason="InvalidSpec", kind="Warning")
