"""`kubectl slot` without a cluster: bad flags, bad kubeconfig and an unreachable API server are one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from slot_operator.kubectl import cli
from slot_operator.kubectl.client import SlotClient


def kubeconfig(tmp_path: Path, *, namespace: str | None = None) -> Path:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "here", "context": context}],
        "current-context": "here",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_unreachable_api_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["list", "--kubeconfig", str(kubeconfig(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("kubectl slot: cannot reach the API server: ")
    assert "Connection refused" in err
    assert "Traceback" not in err


def test_unknown_context_and_missing_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--kubeconfig", str(kubeconfig(tmp_path)), "--context", "there", "why", "x"]) == 1
    assert "there" in capsys.readouterr().err
    assert cli.main(["list", "--kubeconfig", str(tmp_path / "absent")]) == 1
    assert "kubeconfig" in capsys.readouterr().err


def test_bad_timeout_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "x", "--wait", "--timeout", "soon", "--kubeconfig", str(kubeconfig(tmp_path))]) == 2
    assert "--timeout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["frobnicate"])
    assert usage.value.code == 2


def test_the_namespace_comes_from_the_flag_or_the_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, namespace="team-a")
    assert SlotClient(kubeconfig=str(path), context=None, namespace=None).namespace == "team-a"
    assert SlotClient(kubeconfig=str(path), context="here", namespace="b").namespace == "b"
    assert SlotClient(kubeconfig=str(kubeconfig(tmp_path)), context=None, namespace=None).namespace == "default"
