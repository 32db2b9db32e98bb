"""Every field of the Slot CRD's spec, and a second value for each of them.

Shared by tests/unit/operator/test_spec.py (which fields a verdict depends on) and test_jobs.py (which reach
the probe Job), so that a new CRD field fails both until it has one. Each value differs from the minimal
specs those tests build on (agent codex, claim codex-1-home, an image of ghcr.io/example/agent, defaults).
"""

from __future__ import annotations

from typing import Any

import yaml

from tests import repo

SLOT_CRD = yaml.safe_load((repo.ROOT / "crds" / "slots.woved.dev.yaml").read_text())
SPEC_FIELDS: dict[str, Any] = SLOT_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]
OTHER: dict[str, Any] = {
    "agent": "claude",
    "claimName": "other-home",
    "image": "ghcr.io/example/agent:2",
    "mountPath": "/srv/home",
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "pull"}],
    "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "resources": {"limits": {"memory": "1Gi"}},
    "nodeSelector": {"pool": "agents"},
    "tolerations": [{"key": "agents", "operator": "Exists"}],
    "interval": "1h",
    "timeout": "7m",
    "suspend": True,
}
