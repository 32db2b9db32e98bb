"""examples/gitops: the Flux and Argo CD recipes that gate an image rollout on the Slots, checked offline.

What Flux would act on at each step of the README's walk-through is checked on live Slots in
tests/integration/test_gitops_walkthrough.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
ARGOCD = ROOT / "charts" / "slot-operator" / "argocd"
HEALTH_LUA = {"Slot": ARGOCD / "health.lua", "SlotImageCheck": ARGOCD / "SlotImageCheck" / "health.lua"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(directory: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in docs(path) if doc.get("kind") == kind]


def test_flux_slots_are_waited_on_and_the_workers_depend_on_them() -> None:
    kustomizations = {k["metadata"]["name"]: k["spec"] for k in by_kind(GITOPS / "flux", "Kustomization")}
    slots, workers = kustomizations["agent-slots"], kustomizations["agent-workers"]
    assert slots["wait"] is True
    assert workers["dependsOn"] == [{"name": "agent-slots"}]
    for spec in (slots, workers):
        assert (ROOT / spec["path"]).is_dir(), spec["path"]
    assert by_kind(ROOT / slots["path"], "Slot")
    assert not by_kind(ROOT / workers["path"], "Slot")
    assert by_kind(ROOT / workers["path"], "Deployment")


@pytest.mark.parametrize("directory", ["flux/slots", "flux/workers", "argocd/agents"])
def test_one_image_tag_per_kustomization_and_slot_images_are_kustomize_images(directory: str) -> None:
    kustomization = docs(GITOPS / directory / "kustomization.yaml")[0]
    assert [image["name"] for image in kustomization["images"]] == ["ghcr.io/example/agent-shell"]
    if by_kind(GITOPS / directory, "Slot"):
        config = docs(GITOPS / directory / kustomization["configurations"][0])[0]
        assert {"path": "spec/image", "kind": "Slot"} in config["images"]


def test_flux_slots_and_workers_name_the_same_tag() -> None:
    tags = {
        docs(GITOPS / "flux" / part / "kustomization.yaml")[0]["images"][0]["newTag"] for part in ("slots", "workers")
    }
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
