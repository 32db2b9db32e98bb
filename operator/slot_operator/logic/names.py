"""Every name the operator shares with the API and with people: API group, kinds, labels, annotations, containers.

One module, so that a label the watches select on, the Jobs carry and the chart's admission policy
admits is spelled once. Labels only narrow the operator's watches: ownership is decided by identity
(namespace, uid, controller ownerReference), never by them (docs/security.md).
"""

from __future__ import annotations

GROUP = "woved.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SLOT_KIND = "Slot"
SLOT_PLURAL = "slots"
# A candidate image probed against the Slots before it rolls (docs/design.md §2.5).
CHECK_KIND = "SlotImageCheck"
CHECK_PLURAL = "slotimagechecks"
MANAGED_BY = "slot-operator"

# Labels on the operator's Jobs (and, through their templates, on their pods).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
# Slot names can be 253 characters, label values only 63: the uid always fits and survives renames.
LABEL_SLOT_UID = f"{GROUP}/slot-uid"
COMPONENT_PROBE = "probe"
COMPONENT_MIGRATION = "ownership-migration"
COMPONENT_CHECK = "image-check"  # a SlotImageCheck's probe of one Slot
PROBE_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT_PROBE}"
# The operator's watches of Jobs and pods: its probes, its ownership migrations and its checks' probes.
OWN_SELECTOR = (
    f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT} in ({COMPONENT_PROBE},{COMPONENT_MIGRATION},{COMPONENT_CHECK})"
)
# The operator's watch of pods takes every pod with its managed-by label (probes, migrations); the watch of the pods
# that use claims every other one: each pod event is decoded once (kube/cache.py).
OWN_PODS_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
OTHER_PODS_SELECTOR = f"{LABEL_MANAGED_BY}!={MANAGED_BY}"
# The label the Job controller puts on a Job's pods.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"

# Annotations on the operator's Jobs: for people reading them, and the probe's generation and trigger.
ANNOTATION_SLOT = f"{GROUP}/slot"
ANNOTATION_GENERATION = f"{GROUP}/slot-generation"
ANNOTATION_TRIGGER = f"{GROUP}/probe-trigger"
ANNOTATION_MIGRATION_REQUEST = f"{GROUP}/ownership-migration-request"
ANNOTATION_CHECK = f"{GROUP}/image-check"  # on a check's probe Job: the SlotImageCheck's name
ANNOTATION_ATTEMPT = f"{GROUP}/attempt"

# Annotations people put on a Slot.
PROBE_REQUEST_ANNOTATION = f"{GROUP}/probe-requested-at"
MIGRATION_REQUEST_ANNOTATION = f"{GROUP}/ownership-migration-requested-at"
MIGRATION_DRY_RUN_ANNOTATION = f"{GROUP}/ownership-migration-dry-run"

# Containers of the operator's pods.
PROBE_CONTAINER = "probe"
AUDIT_CONTAINER = "audit"
MIGRATE_CONTAINER = "migrate"
