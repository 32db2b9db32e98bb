"""slot-operator: smoke-tests coding-agent slot volumes against their image.

Layout:
- ``logic/``: pure decisions (no I/O): verdicts, Job manifests, conditions, schedule.
- ``kube/``: every Kubernetes API call, behind one storage class.
- ``runtime/``: the reconcile loop (work queue, concurrency cap) that joins the two.
- ``handlers/``: kopf wiring (startup settings, watches that feed the loop).
"""
