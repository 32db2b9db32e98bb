"""Operator configuration from flags and SLOT_OPERATOR_* environment variables (config.py)."""

from __future__ import annotations

import datetime

import pytest
from slot_operator.config import Config, ConfigError, parse

td = datetime.timedelta


def test_defaults() -> None:
    config = parse([], {})
    assert config == Config(
        namespaces=(),
        default_interval=td(hours=6),
        default_timeout=td(minutes=2),
        max_concurrent_probes=10,
        job_ttl=td(hours=1),
        retry_base=td(seconds=10),
        retry_max=td(minutes=10),
        metrics_port=8080,
        health_port=8081,
        log_format="text",
        leader_elect=False,
        leader_elect_namespace=None,
        leader_elect_lease="slot-operator",
        workers=16,
    )
    assert config == Config()


def test_unrelated_environment_is_ignored() -> None:
    assert parse([], {"DEFAULT_INTERVAL": "1m", "PATH": "/usr/bin", "SLOT_OPERATOR": "x"}) == Config()


ENV = {
    "SLOT_OPERATOR_NAMESPACES": "agents, team-b,,agents ",
    "SLOT_OPERATOR_DEFAULT_INTERVAL": "30m",
    "SLOT_OPERATOR_DEFAULT_TIMEOUT": "90s",
    "SLOT_OPERATOR_MAX_CONCURRENT_PROBES": "3",
    "SLOT_OPERATOR_JOB_TTL": "10m",
    "SLOT_OPERATOR_RETRY_BASE": "5s",
    "SLOT_OPERATOR_RETRY_MAX": "2m",
    "SLOT_OPERATOR_METRICS_PORT": "9090",
    "SLOT_OPERATOR_HEALTH_PORT": "0",
    "SLOT_OPERATOR_LOG_FORMAT": "json",
    "SLOT_OPERATOR_LEADER_ELECT": "true",
    "SLOT_OPERATOR_LEADER_ELECT_NAMESPACE": "ops",
    "SLOT_OPERATOR_LEADER_ELECT_LEASE": "slots-lease",
    "SLOT_OPERATOR_WORKERS": "16",
}


def test_environment_fallbacks() -> None:
    assert parse([], ENV) == Config(
        namespaces=("agents", "team-b"),
        default_interval=td(minutes=30),
        default_timeout=td(seconds=90),
        max_concurrent_probes=3,
        job_ttl=td(minutes=10),
        retry_base=td(seconds=5),
        retry_max=td(minutes=2),
        metrics_port=9090,
        health_port=0,
        log_format="json",
        leader_elect=True,
        leader_elect_namespace="ops",
        leader_elect_lease="slots-lease",
        workers=16,
    )


def test_flags_win_over_environment() -> None:
    argv = [
        "--namespace=ns-b",
        "--namespace",
        "ns-a",
        "--default-interval=2h",
        "--default-timeout=45s",
        "--max-concurrent-probes=7",
        "--job-ttl=2m",
        "--retry-base=1s",
        "--retry-max=1m",
        "--metrics-port=0",
        "--health-port=18081",
        "--log-format=text",
        "--no-leader-elect",
        "--leader-elect-namespace=other-ns",
        "--leader-elect-lease=other",
        "--workers=1",
    ]
    assert parse(argv, ENV) == Config(
        namespaces=("ns-a", "ns-b"),
        default_interval=td(hours=2),
        default_timeout=td(seconds=45),
        max_concurrent_probes=7,
        job_ttl=td(minutes=2),
        retry_base=td(seconds=1),
        retry_max=td(minutes=1),
        metrics_port=0,
        health_port=18081,
        log_format="text",
        leader_elect=False,
        leader_elect_namespace="other-ns",
        leader_elect_lease="other",
        workers=1,
    )


def test_one_flag_overrides_only_its_setting() -> None:
    config = parse(["--workers", "2"], ENV)
    assert config.workers == 2
    assert config.default_interval == td(minutes=30)


def test_lease_namespace_defaults_to_the_pods_namespace() -> None:
    assert parse(["--leader-elect"], {"POD_NAMESPACE": "slot-system"}).leader_elect_namespace == "slot-system"
    assert parse([], {}).leader_elect_namespace is None


@pytest.mark.parametrize(
    ("argv", "env", "flag"),
    [
        (["--default-interval=6 hours"], {}, "--default-interval"),
        (["--default-interval=30s"], {}, "--default-interval"),
        ([], {"SLOT_OPERATOR_DEFAULT_INTERVAL": "forever"}, "--default-interval"),
        (["--default-interval=99999999999999h"], {}, "--default-interval"),
        (["--default-timeout=1s"], {}, "--default-timeout"),
        (["--default-timeout=two"], {}, "--default-timeout"),
        (["--max-concurrent-probes=0"], {}, "--max-concurrent-probes"),
        (["--max-concurrent-probes=ten"], {}, "--max-concurrent-probes"),
        ([], {"SLOT_OPERATOR_MAX_CONCURRENT_PROBES": "1.5"}, "--max-concurrent-probes"),
        (["--job-ttl=-1h"], {}, "--job-ttl"),
        (["--job-ttl=0s"], {}, "--job-ttl"),
        (["--default-timeout=2h"], {}, "--default-timeout"),
        (["--default-interval=721h"], {}, "--default-interval"),
        (["--retry-base=500ms"], {}, "--retry-base"),
        (["--retry-base=10s", "--retry-max=5s"], {}, "--retry-max"),
        ([], {"SLOT_OPERATOR_RETRY_MAX": "1s"}, "--retry-max"),
        (["--metrics-port=65536"], {}, "--metrics-port"),
        (["--metrics-port=-1"], {}, "--metrics-port"),
        ([], {"SLOT_OPERATOR_HEALTH_PORT": "http"}, "--health-port"),
        ([], {"SLOT_OPERATOR_LOG_FORMAT": "xml"}, "--log-format"),
        ([], {"SLOT_OPERATOR_LEADER_ELECT": "maybe"}, "--leader-elect"),
        (["--workers=0"], {}, "--workers"),
        (["--workers=257"], {}, "--workers"),
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
