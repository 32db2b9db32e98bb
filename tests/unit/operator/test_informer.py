"""The watch cache's store (kube/informer.py): listings replace, events apply, own writes are no news."""

from __future__ import annotations

from typing import Any

from slot_operator.kube.informer import Object, Store, is_older


def obj(name: str, rv: str, namespace: str = "ns", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv}, **extra}


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str | None, str | None]] = []

    def __call__(self, old: Object | None, new: Object | None) -> None:
        rv = lambda o: o["metadata"]["resourceVersion"] if o else None  # noqa: E731
        self.changes.append((rv(old), rv(new)))


def test_a_relist_reports_what_vanished_while_the_watch_was_down() -> None:
    seen = Recorder()
    store = Store(on_change=seen)
    store.replace([obj("a", "1"), obj("b", "2"), obj("c", "3")])
    seen.changes.clear()

    store.replace([obj("a", "1"), obj("c", "7"), obj("d", "8")])

    assert sorted(seen.changes, key=str) == sorted([("2", None), ("3", "7"), (None, "8")], key=str)
    assert set(store.items) == {("ns", "a"), ("ns", "c"), ("ns", "d")}


def test_an_unchanged_object_in_a_relist_is_not_reported() -> None:
    seen = Recorder()
    store = Store(on_change=seen)
    store.replace([obj("a", "1")])
    store.replace([obj("a", "1")])
    assert seen.changes == [(None, "1")]


def test_watch_events_add_modify_and_delete() -> None:
    seen = Recorder()
    store = Store(on_change=seen)
    store.apply("ADDED", obj("a", "1"))
    store.apply("MODIFIED", obj("a", "2", status={"phase": "Ready"}))
    store.apply("DELETED", obj("a", "3"))
    store.apply("DELETED", obj("never-seen", "4"))
    assert seen.changes == [(None, "1"), ("1", "2"), ("2", None)]
    assert store.items == {}


def test_a_new_version_with_nothing_new_in_it_is_no_news() -> None:
    seen = Recorder()
    store = Store(on_change=seen)
    store.apply("ADDED", obj("a", "1"))
    cached = store.get(("ns", "a"))
    store.apply("MODIFIED", obj("a", "2"))  # what the trim keeps is the same: only the version moved
    assert seen.changes == [(None, "1")]
    assert store.get(("ns", "a")) is cached
    assert cached is not None
    assert cached["metadata"]["resourceVersion"] == "2"  # so an echo of version 2 is older than the cache
    store.apply("MODIFIED", obj("a", "2"))
    assert seen.changes == [(None, "1")]


def test_the_echo_of_an_own_write_is_no_news() -> None:
    seen = Recorder()
    store = Store(on_change=seen)
    store.apply("ADDED", obj("a", "10"))
    assert store.apply_write(obj("a", "12", status={"phase": "Ready"})) == (
        obj("a", "10"),
        obj("a", "12", status={"phase": "Ready"}),
    )
    store.apply("MODIFIED", obj("a", "12", status={"phase": "Ready"}))  # the watch catches up
    assert seen.changes == [(None, "10")]
    assert store.get(("ns", "a"))["status"] == {"phase": "Ready"}  # type: ignore[index]


def test_an_answer_older_than_the_cache_does_not_roll_it_back() -> None:
    store = Store(on_change=Recorder())
    store.apply("ADDED", obj("a", "20"))
    assert store.apply_write(obj("a", "15")) is None
    assert store.get(("ns", "a"))["metadata"]["resourceVersion"] == "20"  # type: ignore[index]


def test_a_failing_listener_does_not_stop_the_store() -> None:
    def broken(old: Object | None, new: Object | None) -> None:
        raise RuntimeError("bug")

    store = Store(on_change=broken)
    store.apply("ADDED", obj("a", "1"))
    store.apply("ADDED", obj("b", "2"))
    assert set(store.items) == {("ns", "a"), ("ns", "b")}


def test_transform_runs_on_everything_stored() -> None:
    store = Store(on_change=Recorder(), transform=lambda o: {"metadata": dict(o["metadata"]), "small": True})
    store.replace([obj("a", "1", spec={"big": "x" * 1000})])
    store.apply("ADDED", obj("b", "2", spec={"big": "y"}))
    assert all(item == {"metadata": item["metadata"], "small": True} for item in store.items.values())


def test_resource_versions_compare_as_write_order_when_numeric() -> None:
    assert is_older(obj("a", "9"), obj("a", "10"))  # not string order
    assert is_older(obj("a", "10"), obj("a", "10"))
    assert not is_older(obj("a", "11"), obj("a", "10"))
    assert not is_older(obj("a", "opaque-2"), obj("a", "opaque-1"))  # opaque: only equality is known
