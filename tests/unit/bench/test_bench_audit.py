"""bench/audit.py: API calls from the audit log, a SlotImageCheck's counted apart from the Slots' own."""

from __future__ import annotations

import json
import pathlib

from bench import audit

USER = "system:serviceaccount:audited:slot-operator"


def event(verb: str, resource: str, name: str = "", *, subresource: str = "", user: str = USER) -> str:
    ref = {"resource": resource, "name": name, **({"subresource": subresource} if subresource else {})}
    return json.dumps({"stage": "ResponseComplete", "verb": verb, "user": {"username": user}, "objectRef": ref})


def test_a_checks_jobs_and_status_writes_are_not_the_slots(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "audit.log"
    lines = [
        event("create", "jobs", "slot-00001-probe-3ec7573857"),
        event("patch", "slots", "slot-00001", subresource="status"),
        event("create", "jobs", "slot-00001-check-0a1b2c3d4e"),
        event("patch", "slotimagechecks", "bench-candidate", subresource="status"),
        event("create", "events"),
        event("list", "slots"),
        event("watch", "pods"),
        event("create", "jobs", "slot-00002-probe-1111111111", user="someone-else"),
    ]
    log.write_text("\n".join(lines) + "\n")
    groups = audit.split(audit.calls(log, since=0, user=USER))
    assert groups["writes"] == {"create jobs": 1, "patch slots/status": 1}
    assert groups["check_writes"] == {"create jobs(image-check)": 1, "patch slotimagechecks/status": 1}
    assert groups["event_writes"] == {"create events": 1}
    assert groups["watches"] == {"watch pods": 1}
    assert groups["check_reads"] == {"list slots": 1}
    assert groups["reads"] == {}
