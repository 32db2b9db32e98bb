"""Operator configuration from flags, each with an environment variable fallback."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from slot_operator.logic import durations, ownership, spec

ENV_PREFIX = "SLOT_OPERATOR_"


class ConfigError(ValueError):
    """A flag or environment value is invalid; the message names it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    default_interval: datetime.timedelta = datetime.timedelta(hours=6)
    default_timeout: datetime.timedelta = datetime.timedelta(minutes=2)
    max_concurrent_probes: int = 10
    # No namespace holds more places than this while others may wait (0: the whole cap when the operator watches
    # one namespace, else half of it, rounded up): one tenant's slow probes cannot take every place.
    max_concurrent_probes_per_namespace: int = 0
    job_ttl: datetime.timedelta = datetime.timedelta(hours=1)
    retry_base: datetime.timedelta = datetime.timedelta(seconds=10)
    retry_max: datetime.timedelta = datetime.timedelta(minutes=10)
    metrics_port: int = 8080
    health_port: int = 8081
    log_format: Literal["text", "json"] = "text"
    # Several replicas: one Lease holder runs the operator, the others wait (kopf's peering would only pause
    # kopf's watches, not this operator's own reconcile workers and timers).
    leader_elect: bool = False
    leader_elect_namespace: str | None = None
    leader_elect_lease: str = "slot-operator"
    workers: int = 16
    # The operator's own image: the ownership audit in every probe pod and the ownership migration run from it
    # (the chart sets it to the operator's image). Empty: no audit (OwnershipMatches Unknown, AuditDisabled).
    audit_image: str = ""
    # The first of the migration's two keys (the second is a person's annotation on the Slot).
    allow_ownership_migration: bool = False
    # The old owners (uid, gid) the migration may move; uid 0 and gid 0 never.
    ownership_migration_from: tuple[ownership.Owner, ...] = ownership.DEFAULT_MIGRATION_FROM

    @property
    def probes_per_namespace(self) -> int:
        """The share of the cap one namespace may hold (max_concurrent_probes_per_namespace, or its default)."""
        if self.max_concurrent_probes_per_namespace:
            return min(self.max_concurrent_probes_per_namespace, self.max_concurrent_probes)
        if len(self.namespaces) == 1:
            return self.max_concurrent_probes
        return max(1, -(-self.max_concurrent_probes // 2))

    @property
    def migration_policy(self) -> ownership.MigrationPolicy:
        return ownership.MigrationPolicy(
            allowed=self.allow_ownership_migration, old_owners=self.ownership_migration_from
        )


def _duration(
    name: str, text: str, *, low: datetime.timedelta, high: datetime.timedelta | None = None
) -> datetime.timedelta:
    try:
        value = durations.parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None
    if value < low:
        raise ConfigError(f"--{name}: {text!r} is shorter than {durations.format_duration(low)}")
    if high is not None and value > high:
        raise ConfigError(f"--{name}: {text!r} is longer than {durations.format_duration(high)}")
    return value


def _int(name: str, text: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--{name}: expected an integer, got {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"--{name}: {value} is outside {low}..{high}")
    return value


def _flag(name: str, value: bool | None, fallback: str) -> bool:
    if value is not None:
        return value
    if fallback.lower() in ("1", "true", "yes"):
        return True
    if fallback.lower() in ("", "0", "false", "no"):
        return False
    raise ConfigError(f"--{name}: expected true or false, got {fallback!r}")


def _valued_flags(defaults: Config) -> tuple[tuple[str, str, str], ...]:
    """Valued flags: (name, built-in default as text, help). Defaults come from Config: one source of truth."""
    fmt = durations.format_duration
    return (
        ("default-interval", fmt(defaults.default_interval), "re-probe period for Slots without spec.interval"),
        ("default-timeout", fmt(defaults.default_timeout), "probe deadline for Slots without spec.timeout"),
        (
            "max-concurrent-probes",
            str(defaults.max_concurrent_probes),
            "probe Jobs running at once across all Slots; the rest queue",
        ),
        (
            "max-concurrent-probes-per-namespace",
            str(defaults.max_concurrent_probes_per_namespace),
            "probe Jobs one namespace may run at once (0: the whole cap when watching one namespace, else half)",
        ),
        ("job-ttl", fmt(defaults.job_ttl), "how long finished probe Jobs are kept (ttlSecondsAfterFinished)"),
        ("retry-base", fmt(defaults.retry_base), "first retry delay after a probe gave no verdict; doubles each time"),
        ("retry-max", fmt(defaults.retry_max), "longest retry delay"),
        ("metrics-port", str(defaults.metrics_port), "Prometheus /metrics port, 0 disables"),
        ("health-port", str(defaults.health_port), "liveness endpoint port (/healthz), 0 disables"),
        ("leader-elect-namespace", "", "namespace of the Lease (default: $POD_NAMESPACE, else the pod's namespace)"),
        ("leader-elect-lease", defaults.leader_elect_lease, "Lease name"),
        ("workers", str(defaults.workers), "Slots reconciled concurrently"),
        (
            "audit-image",
            defaults.audit_image,
            "the operator's own image, for the ownership audit in every probe and the ownership migration",
        ),
    )


def _parser(env: Callable[[str, str], str]) -> argparse.ArgumentParser:
    """Every flag, its environment variable as its default (`env(name, built-in default)`)."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="slot-operator",
        description="Probe coding-agent slot volumes with their image's smoke test and report a verdict per Slot.",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable; env SLOT_OPERATOR_NAMESPACES, comma-separated); default: all namespaces",
    )
    for name, default, text in _valued_flags(defaults):
        parser.add_argument(f"--{name}", default=env(name, default), help=f"{text} (default: %(default)s)")
    parser.add_argument("--log-format", default=env("log-format", defaults.log_format), choices=["text", "json"])
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run only while holding a Lease, for several replicas (env SLOT_OPERATOR_LEADER_ELECT=true)",
    )
    parser.add_argument(
        "--allow-ownership-migration",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the ownership migration a person requests on a Slot (root Job with CAP_CHOWN; "
        "env SLOT_OPERATOR_ALLOW_OWNERSHIP_MIGRATION=true)",
    )
    parser.add_argument(
        "--ownership-migration-from",
        action="append",
        default=None,
        metavar="UID:GID",
        help="an old owner the ownership migration may move (repeatable; env "
        "SLOT_OPERATOR_OWNERSHIP_MIGRATION_FROM, comma-separated; default 1000:1000); never uid 0 or gid 0",
    )
    return parser


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Flags win over SLOT_OPERATOR_* environment variables, which win over defaults."""
    defaults = Config()

    def env(name: str, fallback: str) -> str:
        return environ.get(ENV_PREFIX + name.upper().replace("-", "_"), fallback)

    args = _parser(env).parse_args(list(argv))
    namespaces = args.namespace
    if namespaces is None:
        namespaces = [ns for ns in environ.get(ENV_PREFIX + "NAMESPACES", "").split(",") if ns.strip()]
    log_format = args.log_format
    if log_format not in ("text", "json"):
        raise ConfigError(f"--log-format: expected text or json, got {log_format!r}")
    retry_base = _duration("retry-base", args.retry_base, low=datetime.timedelta(seconds=1))
    retry_max = _duration("retry-max", args.retry_max, low=retry_base)
    return Config(
        namespaces=tuple(sorted({ns.strip() for ns in namespaces if ns.strip()})),
        default_interval=_duration(
            "default-interval", args.default_interval, low=spec.MIN_INTERVAL, high=spec.MAX_INTERVAL
        ),
        default_timeout=_duration("default-timeout", args.default_timeout, low=spec.MIN_TIMEOUT, high=spec.MAX_TIMEOUT),
        max_concurrent_probes=_int("max-concurrent-probes", args.max_concurrent_probes, low=1, high=10000),
        # Shorter and a finished Job could vanish before the operator has read its outcome.
        job_ttl=_duration("job-ttl", args.job_ttl, low=datetime.timedelta(minutes=1)),
        retry_base=retry_base,
        retry_max=retry_max,
        metrics_port=_int("metrics-port", args.metrics_port, low=0, high=65535),
        health_port=_int("health-port", args.health_port, low=0, high=65535),
        log_format=log_format,
        leader_elect=_flag("leader-elect", args.leader_elect, env("leader-elect", "false")),
        leader_elect_namespace=args.leader_elect_namespace or environ.get("POD_NAMESPACE") or None,
        leader_elect_lease=args.leader_elect_lease,
        workers=_int("workers", args.workers, low=1, high=256),
        audit_image=args.audit_image.strip(),
        allow_ownership_migration=_flag(
            "allow-ownership-migration", args.allow_ownership_migration, env("allow-ownership-migration", "false")
        ),
        max_concurrent_probes_per_namespace=_int(
            "max-concurrent-probes-per-namespace", args.max_concurrent_probes_per_namespace, low=0, high=10000
        ),
        ownership_migration_from=_owners(
            args.ownership_migration_from
            if args.ownership_migration_from is not None
            else [text for text in env("ownership-migration-from", "").split(",") if text.strip()]
            or [ownership.owner(*pair) for pair in defaults.ownership_migration_from]
        ),
    )


def _owners(texts: Sequence[str]) -> tuple[ownership.Owner, ...]:
    """--ownership-migration-from values: UID:GID each, never root's."""
    owners: list[ownership.Owner] = []
    for text in texts:
        try:
            uid, gid = ownership.parse_owner(text.strip())
        except ValueError as exc:
            raise ConfigError(f"--ownership-migration-from: {exc}") from None
        if uid == 0 or gid == 0:
            raise ConfigError(f"--ownership-migration-from: {text.strip()}: files of uid 0 or gid 0 are never re-owned")
        owners.append((uid, gid))
    return tuple(dict.fromkeys(owners))
