"""Operator configuration from flags and SLOT_OPERATOR_* environment variables (config.py)."""

from __future__ import annotations

import datetime
from typing import NamedTuple

import pytest
from slot_operator.config import Config, ConfigError, parse

td = datetime.timedelta


class Setting(NamedTuple):
    """One setting of Config: its default, a value from the environment, flags, and what each parses to."""

    field: str
    default: object
    env: tuple[str, str]
    from_env: object
    flags: tuple[str, ...]
    from_flags: object


# fmt: off
SETTINGS = (
    Setting("namespaces", (), ("SLOT_OPERATOR_NAMESPACES", "agents, team-b,,agents "), ("agents", "team-b"),
            ("--namespace=ns-b", "--namespace", "ns-a"), ("ns-a", "ns-b")),
    Setting("default_interval", td(hours=6), ("SLOT_OPERATOR_DEFAULT_INTERVAL", "30m"), td(minutes=30),
            ("--default-interval=2h",), td(hours=2)),
    Setting("default_timeout", td(minutes=2), ("SLOT_OPERATOR_DEFAULT_TIMEOUT", "90s"), td(seconds=90),
            ("--default-timeout=45s",), td(seconds=45)),
    Setting("max_concurrent_probes", 10, ("SLOT_OPERATOR_MAX_CONCURRENT_PROBES", "3"), 3,
            ("--max-concurrent-probes=7",), 7),
    Setting("job_ttl", td(hours=1), ("SLOT_OPERATOR_JOB_TTL", "10m"), td(minutes=10), ("--job-ttl=2m",), td(minutes=2)),
    Setting("retry_base", td(seconds=10), ("SLOT_OPERATOR_RETRY_BASE", "5s"), td(seconds=5),
            ("--retry-base=1s",), td(seconds=1)),
    Setting("retry_max", td(minutes=10), ("SLOT_OPERATOR_RETRY_MAX", "2m"), td(minutes=2),
            ("--retry-max=1m",), td(minutes=1)),
    Setting("metrics_port", 8080, ("SLOT_OPERATOR_METRICS_PORT", "9090"), 9090, ("--metrics-port=0",), 0),
    Setting("health_port", 8081, ("SLOT_OPERATOR_HEALTH_PORT", "0"), 0, ("--health-port=18081",), 18081),
    Setting("log_format", "text", ("SLOT_OPERATOR_LOG_FORMAT", "json"), "json", ("--log-format=text",), "text"),
    Setting("leader_elect", False, ("SLOT_OPERATOR_LEADER_ELECT", "true"), True, ("--no-leader-elect",), False),
    Setting("leader_elect_namespace", None, ("SLOT_OPERATOR_LEADER_ELECT_NAMESPACE", "ops"), "ops",
            ("--leader-elect-namespace=other-ns",), "other-ns"),
    Setting("leader_elect_lease", "slot-operator", ("SLOT_OPERATOR_LEADER_ELECT_LEASE", "slots-lease"), "slots-lease",
            ("--leader-elect-lease=other",), "other"),
    Setting("workers", 16, ("SLOT_OPERATOR_WORKERS", "16"), 16, ("--workers=1",), 1),
)
# fmt: on
ENV = dict(setting.env for setting in SETTINGS)


def expected(column: str) -> Config:
    """The Config whose every setting is the table's `column` (default, from_env or from_flags)."""
    return Config(**{setting.field: getattr(setting, column) for setting in SETTINGS})


def test_defaults() -> None:
    config = parse([], {})
    assert config == expected("default")
    assert config == Config()


def test_unrelated_environment_is_ignored() -> None:
    assert parse([], {"DEFAULT_INTERVAL": "1m", "PATH": "/usr/bin", "SLOT_OPERATOR": "x"}) == Config()


def test_environment_fallbacks() -> None:
    assert parse([], ENV) == expected("from_env")


def test_flags_win_over_environment() -> None:
    assert parse([flag for setting in SETTINGS for flag in setting.flags], ENV) == expected("from_flags")


def test_one_flag_overrides_only_its_setting() -> None:
    config = parse(["--workers", "2"], ENV)
    assert config.workers == 2
    assert config.default_interval == td(minutes=30)


def test_lease_namespace_defaults_to_the_pods_namespace() -> None:
    assert parse(["--leader-elect"], {"POD_NAMESPACE": "slot-system"}).leader_elect_namespace == "slot-system"
    assert parse([], {}).leader_elect_namespace is None


# Values each flag refuses, on the command line...
INVALID_FLAGS = {
    "--default-interval": ("6 hours", "30s", "99999999999999h", "721h"),
    "--default-timeout": ("1s", "two", "2h"),
    "--max-concurrent-probes": ("0", "ten"),
    "--job-ttl": ("-1h", "0s"),
    "--retry-base": ("500ms",),
    "--metrics-port": ("65536", "-1"),
    "--workers": ("0", "257"),
}
# ...and through its environment variable, (variable, refused value, the flag the error names).
INVALID_ENV = (
    ("SLOT_OPERATOR_DEFAULT_INTERVAL", "forever", "--default-interval"),
    ("SLOT_OPERATOR_MAX_CONCURRENT_PROBES", "1.5", "--max-concurrent-probes"),
    ("SLOT_OPERATOR_RETRY_MAX", "1s", "--retry-max"),
    ("SLOT_OPERATOR_HEALTH_PORT", "http", "--health-port"),
    ("SLOT_OPERATOR_LOG_FORMAT", "xml", "--log-format"),
    ("SLOT_OPERATOR_LEADER_ELECT", "maybe", "--leader-elect"),
)


@pytest.mark.parametrize(
    ("argv", "env", "flag"),
    [
        *(([f"{flag}={value}"], {}, flag) for flag, values in INVALID_FLAGS.items() for value in values),
        *(([], {variable: value}, flag) for variable, value, flag in INVALID_ENV),
        (["--retry-base=10s", "--retry-max=5s"], {}, "--retry-max"),  # each valid alone: the pair is not
    ],
)
def test_invalid_values_name_the_flag(argv: list[str], env: dict[str, str], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(argv, env)
    assert str(info.value).startswith(f"{flag}:")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--retry-base=10s", "--retry-max=10s"], "retry_max", td(seconds=10)),
        (["--max-concurrent-probes=10000"], "max_concurrent_probes", 10000),
        (["--metrics-port=65535"], "metrics_port", 65535),
        (["--workers=256"], "workers", 256),
        (["--default-interval=1m"], "default_interval", td(minutes=1)),
        (["--default-timeout=5s"], "default_timeout", td(seconds=5)),
    ],
)
def test_bounds_are_inclusive(argv: list[str], field: str, value: object) -> None:
    assert getattr(parse(argv, {}), field) == value


def test_log_format_flag_is_checked_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["--log-format=xml"], {})
    assert info.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def test_unknown_flag_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["--no-such-flag"], {})
    assert info.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_namespaces_from_flags_are_stripped_deduplicated_and_sorted() -> None:
    config = parse(["--namespace=b", "--namespace= a ", "--namespace=b"], {"SLOT_OPERATOR_NAMESPACES": "env-ns"})
    assert config.namespaces == ("a", "b")


def test_empty_namespace_values_mean_all_namespaces() -> None:
    assert parse(["--namespace="], {}).namespaces == ()
    assert parse([], {"SLOT_OPERATOR_NAMESPACES": " , "}).namespaces == ()


def test_ownership_flags() -> None:
    """The audit image and the first key of the migration: off unless asked for, by flag or environment."""
    assert (parse([], {}).audit_image, parse([], {}).allow_ownership_migration) == ("", False)
    config = parse(["--audit-image", " ghcr.io/woved/slot-operator:1 ", "--allow-ownership-migration"], {})
    assert (config.audit_image, config.allow_ownership_migration) == ("ghcr.io/woved/slot-operator:1", True)
    env = {"SLOT_OPERATOR_AUDIT_IMAGE": "img:2", "SLOT_OPERATOR_ALLOW_OWNERSHIP_MIGRATION": "true"}
    assert parse([], env).allow_ownership_migration is True
    assert parse(["--no-allow-ownership-migration"], env).allow_ownership_migration is False
    with pytest.raises(ConfigError, match="--allow-ownership-migration: expected true or false, got 'maybe'"):
        parse([], {"SLOT_OPERATOR_ALLOW_OWNERSHIP_MIGRATION": "maybe"})


def test_old_owners_the_migration_may_move() -> None:
    assert parse([], {}).ownership_migration_from == ((1000, 1000),)
    config = parse(["--ownership-migration-from=1000:1000", "--ownership-migration-from", "2000:2001"], {})
    assert config.ownership_migration_from == ((1000, 1000), (2000, 2001))
    env = {"SLOT_OPERATOR_OWNERSHIP_MIGRATION_FROM": "1500:1500, 1000:1000"}
    assert parse([], env).ownership_migration_from == ((1500, 1500), (1000, 1000))
    assert parse(["--allow-ownership-migration"], {}).migration_policy.allowed is True


@pytest.mark.parametrize(
    ("value", "words"),
    [("0:0", "uid 0 or gid 0 are never re-owned"), ("1000:0", "never re-owned"), ("root", "numeric ids")],
)
def test_root_is_never_an_old_owner(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=f"--ownership-migration-from: .*{words}"):
        parse([f"--ownership-migration-from={value}"], {})


@pytest.mark.parametrize(
    ("argv", "share"),
    [
        ([], 5),  # every namespace: half of 10
        (["--namespace=a"], 10),  # one namespace: nobody to share with
        (["--namespace=a", "--namespace=b", "--max-concurrent-probes=3"], 2),
        (["--max-concurrent-probes=1"], 1),
        (["--max-concurrent-probes-per-namespace=4"], 4),
        (["--max-concurrent-probes-per-namespace=40"], 10),  # never above the cap
    ],
)
def test_a_namespaces_share_of_the_cap(argv: list[str], share: int) -> None:
    assert parse(argv, {}).probes_per_namespace == share
