"""Scheduling: binds unscheduled pods to a simulated node, or says why none fits, like kube-scheduler.

Filters: nodeSelector and required node affinity, claim existence and binding,
ReadWriteOncePod conflicts. The podgc stand-in lives here too: an unscheduled pod
that is being deleted is marked Failed, as the pod GC controller does, so the Job
controller can drop its tracking finalizer.
"""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from devcluster.nodesim.state import JSON, State, claim_names, is_terminal, now_rfc3339, pod_key

LOG = logging.getLogger("nodesim")
SCHEDULER_NAME = "default-scheduler"


def match_expression(expr: JSON, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_fits(pod: JSON, node: str, labels: dict[str, str]) -> bool:
    """nodeSelector and required node affinity, as the scheduler's NodeAffinity filter."""
    spec = pod["spec"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    fields = {"metadata.name": node}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing
        if all(match_expression(e, labels) for e in exprs) and all(match_expression(e, fields) for e in field_exprs):
            return True
    return False


class Scheduler:
    def __init__(self, state: State, *, scheduler_name: str) -> None:
        self.state = state
        self.scheduler_name = scheduler_name
        self.unschedulable: dict[str, str] = {}  # pod uid -> message last written
        self.podgc_done: set[str] = set()

    def responsible(self, pod: JSON) -> bool:
        return pod["spec"].get("schedulerName", SCHEDULER_NAME) == self.scheduler_name

    def forget(self, uid: str) -> None:
        self.unschedulable.pop(uid, None)
        self.podgc_done.discard(uid)

    def schedule(self, pod: JSON) -> None:
        uid, ns = pod["metadata"]["uid"], pod["metadata"]["namespace"]
        total = len(self.state.nodes)
        reason = self.claim_problem(pod)
        fits = [n for n in self.state.nodes if node_fits(pod, n, self.state.node_labels(n))]
        if reason is None and not fits:
            reason = f"{total} node(s) didn't match Pod's node affinity/selector"
        if reason is not None:
            message = f"0/{total} nodes are available: {reason}."
            if self.unschedulable.get(uid) != message:
                self._write_condition(
                    pod,
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    },
                )
                self.unschedulable[uid] = message
                LOG.info("pod %s: Unschedulable: %s", pod_key(pod), message)
            return
        node = fits[0]
        try:
            self.state.kube.bind(ns, pod["metadata"]["name"], node)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or bound by someone else meanwhile
                return
            raise
        self.unschedulable.pop(uid, None)
        # Reflect the binding locally at once so conflict checks see it before the watch does.
        pod["spec"]["nodeName"] = node
        LOG.info("pod %s: bound to %s", pod_key(pod), node)
        self.state.queue.add(("pod", uid))

    def claim_problem(self, pod: JSON) -> str | None:
        """Scheduler-style reason why the pod's claims block scheduling, or None."""
        ns, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
        for name in claim_names(pod):
            pvc = self.state.pvcs.get((ns, name))
            if pvc is None:
                return f'persistentvolumeclaim "{name}" not found'
            if pvc["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{name}" is being deleted'
            if (pvc.get("status") or {}).get("phase") != "Bound":
                return "pod has unbound immediate PersistentVolumeClaims"
            if "ReadWriteOncePod" in ((pvc.get("spec") or {}).get("accessModes") or []):
                users = [
                    p["metadata"]["name"]
                    for p in self.state.pods.values()
                    if p["metadata"]["uid"] != uid
                    and p["metadata"]["namespace"] == ns
                    and p["spec"].get("nodeName")
                    and not is_terminal(p)
                    and name in claim_names(p)
                ]
                if users:
                    return (
                        f'{len(self.state.nodes)} node(s) unavailable: persistentvolumeclaim "{name}" has access mode '
                        f"ReadWriteOncePod and is already used by pod(s) {', '.join(sorted(users))}"
                    )
        return None

    def _write_condition(self, pod: JSON, condition: JSON) -> None:
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != condition["type"]]
        try:
            self.state.kube.patch_pod_status(
                pod["metadata"]["namespace"], pod["metadata"]["name"], {"conditions": [*others, condition]}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def gc_unscheduled_terminating(self, pod: JSON) -> None:
        """What the pod GC controller does: an unscheduled pod being deleted becomes Failed."""
        uid = pod["metadata"]["uid"]
        if is_terminal(pod) or uid in self.podgc_done:
            return
        now = now_rfc3339()
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        try:
            self.state.kube.patch_pod_status(
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                {
                    "phase": "Failed",
                    "conditions": [
                        *others,
                        {
                            "type": "DisruptionTarget",
                            "status": "True",
                            "reason": "DeletionByPodGC",
                            "message": "PodGC: node no longer exists",
                            "lastProbeTime": None,
                            "lastTransitionTime": now,
                        },
                    ],
                },
            )
        except ApiException as exc:
            if exc.status not in (404, 422):
                raise
        self.podgc_done.add(uid)
        LOG.info("pod %s: unscheduled and terminating: marked Failed", pod_key(pod))
