"""The HTTP client for the Kubernetes API: one connection pool, bounded calls, retries with backoff.

Every request has a deadline. 429, 5xx and connection failures are retried a few times with
exponential backoff and jitter, never in a tight loop. That is safe for every call the operator
makes: reads are reads, probe Jobs have deterministic names (a repeated create answers 409),
status patches are conditional on a resourceVersion, deletes of an absent object answer 404.
Other errors, 409 included, go to the caller, who knows what they mean.

Credentials come from the in-cluster service account or the kubeconfig (the official client's
loaders, refreshed per request when they rotate); the session ignores proxy and netrc
environment variables (looking them up on every request cost ~5% of the CPU at 500 Slots),
except a kubeconfig's own `proxy-url`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from slot_operator.logic import backoff

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds, the whole call including retries
ATTEMPTS = 4
BACKOFF_BASE, BACKOFF_MAX = 0.25, 4.0
RETRIABLE = frozenset({429, 500, 502, 503, 504})
# Watch streams: the server ends each one after this long; the client gives up if silent for longer.
WATCH_SERVER_TIMEOUT = 290
WATCH_READ_TIMEOUT = WATCH_SERVER_TIMEOUT + 30

_METHODS = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH", "update": "PUT", "delete": "DELETE"}
# (verb, resource, HTTP status or 0 for a connection failure) for every request sent.
Observer = Callable[[str, str, int], None]


class ApiError(RuntimeError):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(
        self, status: int, message: str, *, reason: str = "", causes: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.reason = reason  # metav1.Status reason: AlreadyExists, Conflict, Invalid, Forbidden, ...
        self.message = message
        self.causes = causes  # (field, message) for each cause the server named with a field


def api_error(status: int, body: bytes) -> ApiError:
    """The ApiError an error answer means: its message, StatusReason and the fields it names."""
    try:
        data = json.loads(body)
    except ValueError:
        return ApiError(status, body[:300].decode(errors="replace"))
    if not isinstance(data, dict):
        return ApiError(status, body[:300].decode(errors="replace"))
    details = data.get("details") or {}
    causes = tuple(
        (str(cause["field"]), str(cause.get("message") or cause.get("reason") or ""))
        for cause in details.get("causes") or ()
        if isinstance(cause, dict) and cause.get("field")
    )
    message = str(data.get("message") or body[:300].decode(errors="replace"))
    return ApiError(status, message, reason=str(data.get("reason") or ""), causes=causes)


def backoff_delay(attempt: int, *, retry_after: float | None = None) -> float:
    """Jitter over an exponential ceiling (`attempt` from 0); a server's Retry-After is a floor."""
    delay = backoff.jittered(backoff.exponential(attempt + 1, base=BACKOFF_BASE, cap=BACKOFF_MAX))
    return max(delay, min(retry_after or 0.0, BACKOFF_MAX * 4))


class ApiClient:
    def __init__(
        self,
        *,
        server: str,
        ssl_context: ssl.SSLContext,
        configuration: kclient.Configuration | None = None,
        proxy: str | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._configuration = configuration  # credentials, refreshed per request by the official loaders
        self._proxy = proxy
        self.observe: Observer = observe or (lambda verb, resource, status: None)
        connector = aiohttp.TCPConnector(ssl=ssl_context, limit=64, keepalive_timeout=60)
        # Watch events of large objects exceed aiohttp's default line buffer.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=2**20)

    @classmethod
    async def from_environment(cls, *, kubeconfig: str | None = None, observe: Observer | None = None) -> ApiClient:
        """In-cluster credentials when running in a pod, else `kubeconfig`, $KUBECONFIG or ~/.kube/config."""
        configuration = kclient.Configuration()
        try:
            if kubeconfig:
                raise kconfig.ConfigException("a kubeconfig was named")
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kconfig.ConfigException:
            await kconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:  # the kubeconfig says insecure-skip-tls-verify
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return cls(
            server=str(configuration.host),
            ssl_context=context,
            configuration=configuration,
            proxy=configuration.proxy or None,
            observe=observe,
        )

    async def close(self) -> None:
        await self._session.close()

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._configuration is not None:
            auth: Mapping[str, Any] = await self._configuration.auth_settings()
            token = (auth.get("BearerToken") or {}).get("value")
            if token:
                headers["Authorization"] = str(token)
        return headers

    async def request(
        self,
        verb: str,
        path: str,
        *,
        resource: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        within: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """One API call (`verb` as RBAC names it), retried on 429/5xx/connection failures for `within` seconds."""
        method = _METHODS[verb]
        data = json.dumps(body).encode() if body is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(remaining):
                    async with self._session.request(
                        method,
                        self.server + path,
                        params=params,
                        data=data,
                        headers=await self._headers(content_type if data is not None else None),
                        proxy=self._proxy,
                    ) as response:
                        payload = await response.read()
                        self.observe(verb, resource, response.status)
                        if response.status < 400:
                            return dict(json.loads(payload)) if payload else {}
                        error = api_error(response.status, payload)
                        retry_after = _seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, OSError) as exc:
                self.observe(verb, resource, 0)
                error, retry_after = ApiError(0, f"{method} {path}: {exc or type(exc).__name__}"), None
            except TimeoutError:
                self.observe(verb, resource, 0)
                raise ApiError(0, f"{method} {path}: no answer within {within:.0f}s") from None
            if error.status and error.status not in RETRIABLE:
                raise error
            attempt += 1
            delay = backoff_delay(attempt - 1, retry_after=retry_after)
            if attempt >= ATTEMPTS or loop.time() + delay >= deadline:
                raise error
            logger.debug("%s %s: %s; retrying in %.2fs", method, path, error, delay)
            await asyncio.sleep(delay)

    async def stream(self, path: str, *, resource: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """A watch stream: one decoded event per line until the server ends it (or WATCH_READ_TIMEOUT of silence)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=REQUEST_TIMEOUT, sock_read=WATCH_READ_TIMEOUT)
        try:
            async with self._session.get(
                self.server + path, params=params, headers=await self._headers(None), timeout=timeout, proxy=self._proxy
            ) as response:
                self.observe("watch", resource, response.status)
                if response.status >= 400:
                    raise api_error(response.status, await response.read())
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"watch {path}: {exc or type(exc).__name__}") from None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
