#!/usr/bin/env python3
"""Write charts/slot-operator/argocd/testdata/: one Slot per state of the contract, status as the operator writes it.

Each object's status is computed by the operator's own transitions (slot_operator.logic.status),
so the fixtures Argo CD's test format runs (health_test.yaml) are the shapes the operator
really writes. tests/unit/chart/test_argocd_health.py fails while the files differ from this output.

Usage: .venv/bin/python hack/argocd_testdata.py
"""

from __future__ import annotations

import copy
import datetime
import pathlib
from collections.abc import Callable
from typing import Any

import yaml
from slot_operator.logic import names
from slot_operator.logic import status as st
from slot_operator.logic.outcome import NoVerdict, Verdict, classify
from slot_operator.logic.phases import Phase
from slot_operator.logic.spec import parse_spec, verdict_fingerprint
from slot_operator.logic.verdict import FailureReason

TESTDATA = pathlib.Path(__file__).resolve().parents[1] / "charts" / "slot-operator" / "argocd" / "testdata"
T0 = datetime.datetime(2026, 1, 2, 3, 0, 0, tzinfo=datetime.UTC)
INTERVAL = datetime.timedelta(hours=6)
OLD_IMAGE = "ghcr.io/example/agent-shell:sha-1a2b3c-codex"
NEW_IMAGE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"
Status = dict[str, Any]


def _at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def _spec(image: str, *, suspend: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"agent": "codex", "claimName": "codex-1-home", "image": image}
    if suspend:
        spec["suspend"] = True
    return spec


def _probe(generation: int, image: str, *, trigger: str = "created", minutes: int = 0) -> st.ProbeRef:
    parsed = parse_spec(_spec(image), default_interval=INTERVAL, default_timeout=datetime.timedelta(minutes=2))
    return st.ProbeRef(
        job_name=f"codex-1-probe-{generation:02d}{minutes:02d}a1b2c3",
        image=image,
        generation=generation,
        trigger=trigger,
        request=None,
        start_time=_at(minutes),
        spec_hash=verdict_fingerprint(parsed),
    )


def _exit(code: int, message: str) -> Verdict:
    phase = {0: Phase.READY, 65: Phase.NEEDS_INIT, 66: Phase.NEEDS_REAUTH}[code]
    reason = "SmokeTestPassed" if code == 0 else phase.value
    return Verdict(phase=phase, exit_code=code, reason=reason, message=message, result=None, finished=None)


def _pull_failed(message: str) -> Verdict:
    """What the operator makes of a probe pod whose image the kubelet cannot pull (ErrImagePull: `message`)."""
    waiting = {"waiting": {"reason": "ErrImagePull", "message": message}}
    pod = {"status": {"containerStatuses": [{"name": names.PROBE_CONTAINER, "state": waiting}]}}
    outcome = classify({}, [pod], now=T0)
    assert isinstance(outcome, Verdict), outcome
    return outcome


def _verdict(status: Status, generation: int, image: str, outcome: Verdict, minutes: int = 1) -> Status:
    probe = _probe(generation, image, minutes=minutes - 1)
    return st.verdict(status, generation=generation, probe=probe, outcome=outcome, interval=INTERVAL, now=_at(minutes))


def _crash(status: Status, generation: int, image: str, minutes: int) -> Status:
    return st.no_verdict(
        status,
        generation=generation,
        probe=_probe(generation, image, trigger="spec-changed", minutes=minutes - 1),
        outcome=NoVerdict(reason=FailureReason.CRASHED, message="probe exited with code 1 before a check fired"),
        trigger="spec-changed",
        request=None,
        retry_at=_at(minutes + 1),
        now=_at(minutes),
    )


def _new_image_probe() -> st.ProbeRef:
    """The probe of generation 2, the new image, started at minute 10."""
    return _probe(2, NEW_IMAGE, trigger="spec-changed", minutes=10)


def _new_image_queued(status: Status, *, ahead: int) -> Status:
    return st.queued(status, generation=2, probe=_new_image_probe(), ahead=ahead, now=_at(10))


def _ready() -> Status:
    return _verdict({}, 1, OLD_IMAGE, _exit(0, "credentials present and parse"))


def _needs_reauth() -> Status:
    return _verdict({}, 1, OLD_IMAGE, _exit(66, "auth.json: not valid JSON"))


# state: (metadata.generation, spec.image, spec.suspend, status)
STATES: dict[str, Callable[[], tuple[int, str, bool, Status]]] = {
    # The API server's default for a Slot the operator has not written yet (the CRD's status default).
    "not-yet-seen": lambda: (1, OLD_IMAGE, False, {"observedGeneration": 0}),
    "queued": lambda: (1, OLD_IMAGE, False, st.queued({}, generation=1, probe=_probe(1, OLD_IMAGE), ahead=3, now=T0)),
    "probing": lambda: (1, OLD_IMAGE, False, st.probing({}, generation=1, probe=_probe(1, OLD_IMAGE), now=T0)),
    "first-probe-crashed": lambda: (1, OLD_IMAGE, False, _crash({}, 1, OLD_IMAGE, 1)),
    "claim-missing": lambda: (
        1,
        OLD_IMAGE,
        False,
        st.no_verdict(
            {},
            generation=1,
            probe=None,
            outcome=NoVerdict(
                reason=FailureReason.CLAIM_NOT_FOUND,
                message="PersistentVolumeClaim 'codex-1-home' not found in the Slot's namespace",
            ),
            trigger="created",
            request=None,
            retry_at=_at(1),
            now=T0,
        ),
    ),
    "suspended-before-any-verdict": lambda: (1, OLD_IMAGE, True, st.idle({}, generation=1, suspended=True, now=T0)),
    "ready": lambda: (1, OLD_IMAGE, False, _ready()),
    "ready-reprobing": lambda: (
        1,
        OLD_IMAGE,
        False,
        st.probing(_ready(), generation=1, probe=_probe(1, OLD_IMAGE, trigger="interval", minutes=360), now=_at(361)),
    ),
    "ready-reprobe-crashed": lambda: (1, OLD_IMAGE, False, _crash(_ready(), 1, OLD_IMAGE, 362)),
    "needs-init": lambda: (
        1,
        OLD_IMAGE,
        False,
        _verdict({}, 1, OLD_IMAGE, _exit(65, "credentials missing: initialise the slot")),
    ),
    "needs-reauth": lambda: (1, OLD_IMAGE, False, _needs_reauth()),
    "image-broken": lambda: (1, OLD_IMAGE, False, _verdict({}, 1, OLD_IMAGE, _pull_failed("manifest unknown"))),
    "spec-not-yet-observed": lambda: (2, NEW_IMAGE, False, _ready()),
    "ready-then-new-image-queued": lambda: (2, NEW_IMAGE, False, _new_image_queued(_ready(), ahead=2)),
    "ready-then-new-image-crashed": lambda: (2, NEW_IMAGE, False, _crash(_ready(), 2, NEW_IMAGE, 11)),
    "ready-then-new-image-suspended": lambda: (
        2,
        NEW_IMAGE,
        True,
        st.idle(_ready(), generation=2, suspended=True, now=_at(10)),
    ),
    # Only spec.suspend changed: the verdict answers for the new generation too (a verdict field changed: above).
    "ready-then-suspended": lambda: (
        2,
        OLD_IMAGE,
        True,
        st.carried(_ready(), generation=2, suspended=True, next_probe=None, now=_at(10)),
    ),
    "needs-reauth-then-suspended": lambda: (
        2,
        OLD_IMAGE,
        True,
        st.carried(_needs_reauth(), generation=2, suspended=True, next_probe=None, now=_at(10)),
    ),
    "needs-reauth-then-new-image-queued": lambda: (2, NEW_IMAGE, False, _new_image_queued(_needs_reauth(), ahead=4)),
    "invalid-spec": lambda: (
        2,
        NEW_IMAGE,
        False,
        st.invalid_spec(
            _ready(),
            generation=2,
            message="spec.mountPath: /proc/x is under /proc, which the container itself needs",
            now=_at(10),
        ),
    ),
    "mount-failed": lambda: (
        2,
        NEW_IMAGE,
        False,
        st.no_verdict(
            _ready(),
            generation=2,
            probe=_new_image_probe(),
            outcome=NoVerdict(
                reason=FailureReason.INVALID_SPEC,
                message='spec.mountPath: the container runtime could not mount the claim: error mounting "/var/lib/'
                'kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1/mount" to rootfs at "/opt/agent": not a directory',
            ),
            trigger="spec-changed",
            request=None,
            retry_at=_at(12),
            now=_at(11),
        ),
    ),
}


def slot(state: str) -> dict[str, Any]:
    generation, image, suspend, status = STATES[state]()
    return {
        "apiVersion": "woved.dev/v1alpha1",
        "kind": "Slot",
        "metadata": {"name": "codex-1", "namespace": "agents", "generation": generation},
        "spec": _spec(image, suspend=suspend),
        "status": copy.deepcopy(status),
    }


def render(state: str) -> str:
    return f"# {state}: written by hack/argocd_testdata.py\n" + yaml.safe_dump(slot(state), sort_keys=False)


def main() -> None:
    for old in TESTDATA.glob("*.yaml"):
        old.unlink()
    for state in STATES:
        (TESTDATA / f"{state}.yaml").write_text(render(state))


if __name__ == "__main__":
    main()
