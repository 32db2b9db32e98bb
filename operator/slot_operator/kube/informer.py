"""Watch caches: list once, then watch from the list's resourceVersion (client-go's reflector).

An `Informer` keeps the objects of one kind (in one namespace, or in all), trimmed to what
the operator reads, and reports every change as `on_change(old, new)` (`new` is None for a
deletion). When a watch cannot resume (410 Gone: the version is older than the server's
history), it lists again and replaces its contents: objects that vanished meanwhile are
reported as deleted, objects whose resourceVersion did not change are not reported at all.
kopf's own watch stream cannot do this (it gives no end-of-listing signal to handlers, so an
object deleted while the stream was down would stay in a cache fed by it forever).

Objects the operator writes itself are put in the cache from the API's answer
(`apply_write`), so the watch's echo of that write carries no news and costs nothing. Nor does
an event whose object, once trimmed, differs from the cached one only in its resourceVersion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slot_operator.kube import api as api_module
from slot_operator.logic import backoff

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Object = dict[str, Any]
Transform = Callable[[Mapping[str, Any]], Object]
OnChange = Callable[[Object | None, Object | None], None]

PAGE_SIZE = 500
RETRY_BASE, RETRY_MAX = 1.0, 30.0


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name"))


def resource_version(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def is_older(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True when `candidate` is a version the cache has already moved past (or the same one).

    resourceVersions are opaque, but every version of one object comes from the same etcd
    revision counter: equal means the same version, and numeric order is write order.
    """
    new, old = resource_version(candidate), resource_version(current)
    if new == old:
        return True
    if new.isdigit() and old.isdigit():
        return int(new) < int(old)
    return False


def same_but_version(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The two versions of one trimmed object differ in their resourceVersion at most."""
    if old.keys() != new.keys():
        return False
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    if old_meta.keys() != new_meta.keys() or "resourceVersion" not in new_meta:
        return False
    return all(old_meta[f] == new_meta[f] for f in new_meta if f != "resourceVersion") and all(
        old[k] == new[k] for k in new if k != "metadata"
    )


class _Gone(Exception):
    """The watch cannot resume from this resourceVersion: list again."""


class Store:
    """The objects of one watch, keyed by (namespace, name); every change is reported once. No I/O."""

    def __init__(self, *, transform: Transform = dict, on_change: OnChange) -> None:
        self._transform = transform
        self._notify = on_change
        self.items: dict[Key, Object] = {}

    def get(self, key: Key) -> Object | None:
        return self.items.get(key)

    def _on_change(self, old: Object | None, new: Object | None) -> None:
        try:
            self._notify(old, new)
        except Exception:  # a bug in a listener must not stop the watch
            logger.exception("change handler failed for %s", key_of(new or old or {}))

    def replace(self, raw_items: Iterable[Mapping[str, Any]]) -> None:
        """A full listing: what vanished is reported deleted, what is new or changed is reported, the rest not."""
        items = {key_of(obj): obj for obj in map(self._transform, raw_items)}
        old_items, self.items = self.items, items
        for key, old in old_items.items():
            if key not in items:
                self._on_change(old, None)
        for key, new in items.items():
            previous = old_items.get(key)
            if previous is None or resource_version(previous) != resource_version(new):
                self._on_change(previous, new)

    def apply(self, kind: str, raw: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        new = self._transform(raw)
        key = key_of(new)
        old = self.items.get(key)
        if kind == "DELETED":
            if old is not None:
                del self.items[key]
                self._on_change(old, None)
            return
        if old is not None and is_older(new, old):
            return  # the echo of the operator's own write (already cached), or older than it
        if old is not None and same_but_version(old, new):
            # Only what the trim drops changed (a Job's pod counts, a pod's IPs, finalizers, managedFields):
            # no news. The cached object, wherever it is indexed, takes the new version.
            old["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"]
            return
        self.items[key] = new
        self._on_change(old, new)

    def apply_write(self, obj: Mapping[str, Any]) -> tuple[Object | None, Object] | None:
        """Cache an object as the API answered a write of it; (old, new), or None if the cache is already newer.

        Not reported to the listener: the writer acts on its own write.
        """
        new = self._transform(obj)
        key = key_of(new)
        old = self.items.get(key)
        if old is not None and is_older(new, old):
            return None
        self.items[key] = new
        return old, new


class Informer:
    """Keeps a Store in step with the API server: list, then watch; list again when the watch expires."""

    def __init__(
        self,
        api: api_module.ApiClient,
        *,
        resource: str,
        path: str,
        selectors: Mapping[str, str] | None = None,
        transform: Transform = dict,
        on_change: OnChange,
    ) -> None:
        self.resource = resource  # for logs and metrics: "slots", "jobs", ...
        self.store = Store(transform=transform, on_change=on_change)
        self._api = api
        self._path = path
        self._selectors = dict(selectors or {})
        self.synced = asyncio.Event()
        self.relists = 0  # lists after the first one
        self.last_contact = time.monotonic()  # last list, event or bookmark from the server
        self.last_error: api_module.ApiError | None = None

    def __repr__(self) -> str:
        return f"Informer({self._path}, {self._selectors})"

    async def run(self) -> None:
        """List and watch until cancelled; failures are retried with backoff, never given up."""
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._list()
                    self.synced.set()
                version = await self._watch(version)
                failures = 0
            except _Gone:
                logger.info("%s: watch expired, listing again", self)
                self.relists += 1
                version = None
            except api_module.ApiError as exc:
                if exc.status == 410:  # the watch request itself was refused as too old
                    self.relists += 1
                    version = None
                    continue
                failures += 1
                self.last_error = exc
                delay = backoff.exponential(failures, base=RETRY_BASE, cap=RETRY_MAX)
                logger.warning("%s: %s (retry in %.0fs)", self, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        items: list[Mapping[str, Any]] = []
        params: dict[str, str] = {**self._selectors, "limit": str(PAGE_SIZE)}
        while True:
            page = await self._api.request("list", self._path, resource=self.resource, params=params)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                version = str(meta.get("resourceVersion") or "")
                break
            params["continue"] = str(meta["continue"])
        self.last_contact = time.monotonic()
        self.store.replace(items)
        return version

    async def _watch(self, version: str) -> str:
        params = {
            **self._selectors,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(api_module.WATCH_SERVER_TIMEOUT),
        }
        self.last_contact = time.monotonic()
        async for event in self._api.stream(self._path, resource=self.resource, params=params):
            self.last_contact = time.monotonic()
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise api_module.ApiError(int(obj.get("code") or 0), str(obj.get("message") or obj))
            version = resource_version(obj) or version
            if kind != "BOOKMARK":
                self.store.apply(str(kind), obj)
        return version
