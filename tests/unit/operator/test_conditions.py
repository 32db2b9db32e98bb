"""metav1.Condition lists (logic/conditions.py)."""

from __future__ import annotations

import datetime
from typing import Any

from slot_operator.logic import conditions

T0 = datetime.datetime(2024, 5, 6, 7, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def set_(conds: list[dict[str, Any]], kind: str, status: str, **kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {"reason": "R", "message": "m", "generation": 1, "now": T0}
    args.update(kw)
    return conditions.set_condition(conds, kind=kind, status=status, **args)


def test_new_condition_has_metav1_shape() -> None:
    result = set_([], "Ready", "True", reason="SmokeTestPassed", message="ok", generation=3)
    assert result == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "SmokeTestPassed",
            "message": "ok",
            "observedGeneration": 3,
            "lastTransitionTime": "2024-05-06T07:00:00Z",
        }
    ]


def test_unchanged_status_keeps_transition_time() -> None:
    first = set_([], "Ready", "True", reason="A", message="one", generation=1, now=T0)
    second = set_(first, "Ready", "True", reason="B", message="two", generation=2, now=T1)
    assert second == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "B",
            "message": "two",
            "observedGeneration": 2,
            "lastTransitionTime": "2024-05-06T07:00:00Z",
        }
    ]


def test_changed_status_moves_transition_time() -> None:
    first = set_([], "Ready", "True", now=T0)
    second = set_(first, "Ready", "False", now=T1)
    assert second[0]["lastTransitionTime"] == "2024-05-06T07:05:00Z"
    assert second[0]["status"] == "False"


def test_missing_transition_time_is_filled_in() -> None:
    previous = [{"type": "Ready", "status": "True", "reason": "x", "message": ""}]
    result = set_(previous, "Ready", "True", now=T1)
    assert result[0]["lastTransitionTime"] == "2024-05-06T07:05:00Z"


def test_input_is_not_mutated() -> None:
    previous = [{"type": "Ready", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "old"}]
    snapshot = [dict(c) for c in previous]
    set_(previous, "Ready", "False", now=T1)
    assert previous == snapshot


def test_conditions_are_in_canonical_order_and_unknown_types_follow() -> None:
    conds: list[dict[str, Any]] = [{"type": "Custom", "status": "True"}]
    for kind in ("ProbeSucceeded", "Reconciling", "Ready", "Stalled"):
        conds = set_(conds, kind, "False")
    assert [c["type"] for c in conds] == ["Ready", "Stalled", "Reconciling", "ProbeSucceeded", "Custom"]
    assert conds[-1] == {"type": "Custom", "status": "True"}


def test_setting_one_leaves_others_untouched() -> None:
    conds = set_([], "Ready", "True", reason="SmokeTestPassed", generation=1, now=T0)
    conds = set_(conds, "Stalled", "False", reason="Ready", generation=1, now=T0)
    ready_before = dict(conds[0])
    conds = set_(conds, "Stalled", "True", reason="NeedsReauth", generation=2, now=T1)
    assert conds[0] == ready_before
    assert conds[1]["status"] == "True"
    assert conds[1]["observedGeneration"] == 2
    assert len(conds) == 2


def test_each_type_appears_once() -> None:
    conds = set_([], "Ready", "True")
    conds = set_(conds, "Ready", "True")
    conds = set_(conds, "Ready", "False")
    assert [c["type"] for c in conds] == ["Ready"]


def test_message_is_sanitised_and_capped() -> None:
    secret = "ya29" + "X" * 60
    conds = set_([], "ProbeSucceeded", "False", message=f"token\n{secret}\nrejected " + "y " * 1000)
    message = conds[0]["message"]
    assert secret not in message
    assert message.startswith("token [redacted] rejected y y")
    assert len(message) == 1024
    assert "\n" not in message


def test_find() -> None:
    conds = [{"type": "Ready", "status": "True"}, {"type": "Stalled", "status": "False"}]
    assert conditions.find(conds, "Stalled") == {"type": "Stalled", "status": "False"}
    assert conditions.find(conds, "Reconciling") is None
    assert conditions.find([], "Ready") is None


def test_type_names() -> None:
    assert conditions.ORDER == ("Ready", "Stalled", "Reconciling", "ProbeSucceeded")
