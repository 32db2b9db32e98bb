"""`make bench`: the operator's cost and speed, next to a minimal raw client, on the local control plane.

- run.py        the driver: workloads, both runs, the report (`python -m bench --help`)
- baseline.py   BENCHMARK BASELINE, not part of the product: the least a client must do to probe
                N Slots (create each Job, watch pods, one status patch per verdict)
- workload.py   claims with valid credentials, Slots, identities whose calls the audit log records
- observe.py    watches that timestamp pod terminations and verdicts as the API server publishes them
- audit.py      API calls by verb and resource, read from the API server's audit log
- timing.py     where each verdict's time went: the operator's timing lines (SLOT_OPERATOR_TIMING_LOG)
                matched with observe.py's stamps; the report shows each part's p50/p99 and the slowest ten
"""
