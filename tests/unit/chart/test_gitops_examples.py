"""examples/gitops: the Flux and Argo CD recipes that gate an image rollout on the Slots, checked offline.

What Flux would act on at each step of the README's walk-through is checked on live Slots in
tests/integration/test_gitops_walkthrough.py. The recipes with a SlotImageCheck first (Flux's
agents-with-check.yaml, Argo CD's agents-with-check/) are rendered with kustomize (`kubectl kustomize`)
and held to the CRD's schema; the API server accepts them in tests/integration/test_image_check_crd.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import image_check_contract, repo

ROOT = repo.ROOT
GITOPS = ROOT / "examples" / "gitops"
CHECK_CRD = ROOT / "crds" / "slotimagechecks.woved.dev.yaml"
IMAGE = "ghcr.io/example/agent-shell"
ARGOCD = ROOT / "charts" / "slot-operator" / "argocd"
HEALTH_LUA = {"Slot": ARGOCD / "health.lua", "SlotImageCheck": ARGOCD / "SlotImageCheck" / "health.lua"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(directory: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in docs(path) if doc.get("kind") == kind]


def test_flux_slots_are_waited_on_and_the_workers_depend_on_them() -> None:
    kustomizations = {k["metadata"]["name"]: k["spec"] for k in docs(GITOPS / "flux" / "agents.yaml")}
    slots, workers = kustomizations["agent-slots"], kustomizations["agent-workers"]
    assert slots["wait"] is True
    assert workers["dependsOn"] == [{"name": "agent-slots"}]
    for spec in (slots, workers):
        assert (ROOT / spec["path"]).is_dir(), spec["path"]
    assert by_kind(ROOT / slots["path"], "Slot")
    assert not by_kind(ROOT / workers["path"], "Slot")
    assert by_kind(ROOT / workers["path"], "Deployment")


# directory -> the kinds whose spec.image its kustomize `images` transformer must set (the overlay sets its base's)
IMAGE_KINDS = {
    "flux/slots": ["Slot"],
    "flux/workers": [],
    "flux/checks": ["SlotImageCheck"],
    "argocd/agents": ["Slot"],
    "argocd/agents-with-check": ["Slot", "SlotImageCheck"],
}
TAGGED = list(IMAGE_KINDS)


@pytest.mark.parametrize("directory", TAGGED)
def test_one_image_tag_per_kustomization_and_slot_images_are_kustomize_images(directory: str) -> None:
    kustomization = docs(GITOPS / directory / "kustomization.yaml")[0]
    assert [image["name"] for image in kustomization["images"]] == ["ghcr.io/example/agent-shell"]
    configured = [docs(GITOPS / directory / path)[0]["images"] for path in kustomization.get("configurations", [])]
    for kind in IMAGE_KINDS[directory]:
        assert any({"path": "spec/image", "kind": kind} in images for images in configured), kind


def test_every_kustomization_names_the_same_tag() -> None:
    """One tag across the recipes: a bump changes every newTag line, and a CI check finds one new image."""
    tags = {docs(GITOPS / part / "kustomization.yaml")[0]["images"][0]["newTag"] for part in TAGGED}
    assert len(tags) == 1


def test_agent_homes_are_never_pruned() -> None:
    for claim in by_kind(GITOPS / "flux" / "slots", "PersistentVolumeClaim"):
        assert claim["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    for claim in by_kind(GITOPS / "argocd" / "agents", "PersistentVolumeClaim"):
        assert claim["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"


def _wave(doc: dict[str, Any]) -> int:
    return int((doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_argo_slots_and_their_claims_come_a_wave_before_the_workers() -> None:
    agents = GITOPS / "argocd" / "agents"
    gate = {_wave(d) for kind in ("Slot", "PersistentVolumeClaim") for d in by_kind(agents, kind)}
    workers = {_wave(d) for d in by_kind(agents, "Deployment")}
    assert len(gate) == 1
    assert max(gate) < min(workers)


def test_argo_health_customizations_are_the_charts_scripts() -> None:
    config = docs(GITOPS / "argocd" / "argocd-cm.yaml")[0]
    assert set(config["data"]) == {f"resource.customizations.health.woved.dev_{kind}" for kind in HEALTH_LUA}
    for kind, script in HEALTH_LUA.items():
        assert config["data"][f"resource.customizations.health.woved.dev_{kind}"] == script.read_text(), kind
    application = docs(GITOPS / "argocd" / "application.yaml")[0]
    assert (ROOT / application["spec"]["source"]["path"]).is_dir()


# --- the recipes with a SlotImageCheck first ---------------------------------------------------------


def test_flux_with_a_check_orders_check_slots_workers() -> None:
    """agents-with-check.yaml is agents.yaml with agent-image-check in front of both Kustomizations."""
    plain = {k["metadata"]["name"]: k["spec"] for k in docs(GITOPS / "flux" / "agents.yaml")}
    checked = {k["metadata"]["name"]: k["spec"] for k in docs(GITOPS / "flux" / "agents-with-check.yaml")}
    assert list(checked) == ["agent-image-check", "agent-slots", "agent-workers"]
    check = checked["agent-image-check"]
    assert (check["wait"], check["force"], check["prune"]) == (True, True, True)  # force: a new tag is a new check
    assert "dependsOn" not in check
    assert checked["agent-slots"]["dependsOn"] == [{"name": "agent-image-check"}]
    assert checked["agent-workers"]["dependsOn"] == [{"name": "agent-image-check"}, {"name": "agent-slots"}]
    for name in ("agent-slots", "agent-workers"):
        same = {key: value for key, value in checked[name].items() if key not in ("dependsOn", "timeout")}
        assert same == {key: value for key, value in plain[name].items() if key not in ("dependsOn", "timeout")}
    assert check["sourceRef"] == plain["agent-slots"]["sourceRef"]
    assert by_kind(ROOT / check["path"], "SlotImageCheck")


def test_argo_with_a_check_points_at_the_overlay() -> None:
    plain = docs(GITOPS / "argocd" / "application.yaml")[0]
    checked = docs(GITOPS / "argocd" / "application-with-check.yaml")[0]
    assert checked["spec"]["source"]["path"] == "examples/gitops/argocd/agents-with-check"
    assert (ROOT / checked["spec"]["source"]["path"]).is_dir()
    checked["spec"]["source"]["path"] = plain["spec"]["source"]["path"]
    assert checked == plain


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the recipes")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True,
                         timeout=60).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("directory", ["flux/checks", "argocd/agents-with-check"])
def test_the_rendered_check_is_valid_and_probes_the_recipes_tag(directory: str) -> None:
    rendered = kustomize(GITOPS / directory)
    (check,) = [d for d in rendered if d["kind"] == "SlotImageCheck"]
    schema = yaml.safe_load(CHECK_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert image_check_contract.schema_problems(check["spec"], schema["properties"]["spec"], "spec") == []
    assert check["apiVersion"] == "woved.dev/v1alpha1"
    assert check["metadata"]["namespace"] == "agents"
    tag = docs(GITOPS / directory / "kustomization.yaml")[0]["images"][0]["newTag"]
    assert check["spec"]["image"] == f"{IMAGE}:{tag}"
    assert "selector" not in check["spec"]  # every Slot of the namespace: the Slots the recipe rolls
    images = {d["spec"]["image"] for d in rendered if d["kind"] == "Slot"} | {
        c["image"] for d in rendered if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images <= {check["spec"]["image"]}


def test_argo_syncs_the_check_first_and_recreates_it() -> None:
    rendered = kustomize(GITOPS / "argocd" / "agents-with-check")
    (check,) = [d for d in rendered if d["kind"] == "SlotImageCheck"]
    gate = {_wave(d) for d in rendered if d["kind"] in ("Slot", "PersistentVolumeClaim")}
    workers = {_wave(d) for d in rendered if d["kind"] == "Deployment"}
    assert _wave(check) < min(gate) <= max(gate) < min(workers)
    options = {o.strip() for o in check["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")}
    assert options == {"Force=true", "Replace=true"}  # an immutable spec: delete and create, never patch
    assert {d["kind"] for d in rendered} == {"SlotImageCheck", "Slot", "PersistentVolumeClaim", "Deployment"}
