"""The contract's state table: what Flux (kstatus) and Argo CD (health.lua) must read in each Slot state.

One table for the fixtures (charts/slot-operator/argocd/testdata, tests/unit/chart/test_argocd_health.py)
and the live Slots (tests/integration/test_gitops_states.py); docs/design.md shows the same rows.
"""

from __future__ import annotations

# state: (kstatus, Argo CD health)
EXPECTED: dict[str, tuple[str, str]] = {
    # The current generation has no verdict yet: every gate waits.
    "not-yet-seen": ("InProgress", "Progressing"),
    "queued": ("InProgress", "Progressing"),
    "probing": ("InProgress", "Progressing"),
    "first-probe-crashed": ("InProgress", "Progressing"),
    "claim-missing": ("InProgress", "Progressing"),
    "suspended-before-any-verdict": ("InProgress", "Suspended"),
    # A verdict on the current generation.
    "ready": ("Current", "Healthy"),
    "ready-reprobing": ("Current", "Healthy"),
    "ready-reprobe-crashed": ("Current", "Healthy"),
    "needs-init": ("Failed", "Degraded"),
    "needs-reauth": ("Failed", "Degraded"),
    "image-broken": ("Failed", "Degraded"),
    # A new generation after an older verdict: the old verdict never speaks for it.
    "spec-not-yet-observed": ("InProgress", "Progressing"),
    "ready-then-new-image-queued": ("InProgress", "Progressing"),
    "ready-then-new-image-crashed": ("InProgress", "Progressing"),
    "ready-then-new-image-suspended": ("InProgress", "Suspended"),
    "needs-reauth-then-new-image-queued": ("InProgress", "Progressing"),
    # A new generation that changed only interval, timeout or suspend: the verdict answers for it too.
    "ready-then-suspended": ("Current", "Healthy"),
    "needs-reauth-then-suspended": ("Failed", "Degraded"),
    # The spec is at fault.
    "invalid-spec": ("Failed", "Degraded"),
    "mount-failed": ("Failed", "Degraded"),
}

# The SlotImageCheck's states (docs/design.md §2.5): what a rollout waiting on a check of the new tag reads.
# Fixtures: charts/slot-operator/argocd/SlotImageCheck/testdata (hand-written statuses of the contract).
CHECK_EXPECTED: dict[str, tuple[str, str]] = {
    # No answer yet: the gate waits, even when an answer that needs a human is already in.
    "not-yet-seen": ("InProgress", "Progressing"),
    "queued": ("InProgress", "Progressing"),
    "probing": ("InProgress", "Progressing"),
    "probing-one-would-need-a-human": ("InProgress", "Progressing"),
    # Every selected Slot would be Ready: the gate passes.
    "succeeded": ("Current", "Healthy"),
    # A Slot would need a human, or no answer will come: the gate stops.
    "failed-owned-by-the-old-uid": ("Failed", "Degraded"),
    "failed-image-broken": ("Failed", "Degraded"),
    "failed-and-no-verdict": ("Failed", "Degraded"),
    "error-no-slots-selected": ("Failed", "Degraded"),
    "error-no-verdict": ("Failed", "Degraded"),
}
