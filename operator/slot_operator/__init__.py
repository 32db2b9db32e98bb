"""slot-operator: smoke-tests coding-agent slot volumes against their image.

Layout (docs/design.md §4):
- ``logic/``: the decisions, pure (no I/O): phases, verdicts, Job manifests, conditions, status, the
  schedule, ownership, and what a reconcile does next (``probing``, ``migrating``).
- ``kube/``: every Kubernetes API call: the HTTP client, the watch caches, the writer, the Lease.
- ``runtime/``: acting on the decisions: the work queue, the cap, the controller and its reconcile.
- ``lifecycle/``: kopf wiring: start-up, clean-up, liveness.
- ``volume/``: what runs in pods on a slot's volume (the ownership audit and migration).
- ``kubectl/``: the ``kubectl slot`` plugin.
"""
