"""`kubectl slot check` without a cluster: its input, the exit codes and the three renderings, from statuses of
the contract (the SlotImageCheck fixtures of charts/slot-operator/argocd/SlotImageCheck/testdata), and the
command itself against a stand-in API client (create, wait, a deleted check, --timeout, --name twice).

The live run against the API server is tests/integration/test_kubectl_slot_check.py.
"""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from slot_operator.kubectl import check, cli, selector
from slot_operator.kubectl.client import ClientError

from tests import repo

TESTDATA = repo.ROOT / "charts" / "slot-operator" / "argocd" / "SlotImageCheck" / "testdata"
IMAGE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"


def fixture(state: str) -> dict[str, Any]:
    return dict(yaml.safe_load((TESTDATA / f"{state}.yaml").read_text()))


# --- input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", {}),
        ("pool=codex", {"matchLabels": {"pool": "codex"}}),
        ("pool==codex,tier=a", {"matchLabels": {"pool": "codex", "tier": "a"}}),
        ("example.com/pool = codex", {"matchLabels": {"example.com/pool": "codex"}}),
        ("pool!=claude", {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["claude"]}]}),
        ("pool in (a, b),!parked", {"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["a", "b"]},
            {"key": "parked", "operator": "DoesNotExist"},
        ]}),
        ("pool notin (x),team", {"matchExpressions": [
            {"key": "pool", "operator": "NotIn", "values": ["x"]},
            {"key": "team", "operator": "Exists"},
        ]}),
        ("pool=a,pool=b", {"matchLabels": {"pool": "a"},
                           "matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]}),
        ("pool=", {"matchLabels": {"pool": ""}}),
    ],
)  # fmt: skip
def test_selectors_read_like_kubectl(text: str, parsed: dict[str, Any]) -> None:
    assert selector.parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pool=a,", "an empty requirement"),
        ("pool in (a", "a '(' without its ')'"),
        ("pool in a)", "a ')' without its '('"),
        ("pool in ()", "in needs at least one value"),
        ("replicas>1", "a LabelSelector has no greater-than or less-than"),
        ("bad key=a", "cannot read 'bad key=a'"),
        ("Pool_/x=a", "'Pool_/x' is not a label key"),
        ("pool=a b", "cannot read 'pool=a b'"),
        ("pool=" + "v" * 64, "is not a label value"),
        ("pool=-a", "'-a' is not a label value"),
    ],
)
def test_bad_selectors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        selector.parse(text)


def test_run_as() -> None:
    assert check.parse_run_as("10001:10001") == (10001, 10001)
    assert check.parse_run_as(" 1000:1001 ") == (1000, 1001)
    refusals = {"10001": "expected UID:GID", "0:10001": "the UID must be 1 to 2147483647",
                "1:2147483648": "the GID must be 1 to 2147483647", "a:b": "expected UID:GID"}  # fmt: skip
    for text, message in refusals.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            check.parse_run_as(text)


def test_the_request() -> None:
    body = check.request(image=IMAGE, selector={"matchLabels": {"pool": "codex"}}, run_as=(10001, 10001), name=None)
    assert body == {
        "apiVersion": "woved.dev/v1alpha1",
        "kind": "SlotImageCheck",
        "metadata": {"generateName": "check-"},
        "spec": {"image": IMAGE, "selector": {"matchLabels": {"pool": "codex"}}, "runAsUser": 10001,
                 "runAsGroup": 10001},
    }  # fmt: skip
    named = check.request(image=IMAGE, selector={}, run_as=None, name="pr-42")
    assert named["metadata"] == {"name": "pr-42"}
    assert named["spec"] == {"image": IMAGE}
    for kwargs, message in (({"image": "a b"}, "--image:"), ({"image": ""}, "--image:"),
                            ({"name": "PR_42"}, "--name: 'PR_42' is not a DNS subdomain")):  # fmt: skip
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            check.request(**{"image": IMAGE, "selector": {}, "run_as": None, "name": None, **kwargs})


def test_the_same_question_ignores_the_defaulted_ttl() -> None:
    wanted = check.request(image=IMAGE, selector={}, run_as=(10001, 10001), name="c")
    stored = {"spec": {**wanted["spec"], "ttlAfterFinished": "24h"}}
    assert check.same_question(stored, wanted)
    assert not check.same_question({"spec": {**stored["spec"], "runAsUser": 1000}}, wanted)
    assert not check.same_question({"spec": {**stored["spec"], "selector": {"matchLabels": {"a": "b"}}}}, wanted)


# --- the answer -----------------------------------------------------------------------------------

# fixture -> the exit code of `kubectl slot check --wait` once the check reads so
EXIT_CODES = {
    "succeeded": 0,
    "failed-owned-by-the-old-uid": 65,  # NeedsInit
    "failed-image-broken": 64,
    "failed-and-no-verdict": 66,  # NeedsReauth outranks a Slot without a verdict: the answer is known to be bad
    "error-no-slots-selected": 1,
    "error-no-verdict": 1,
    "probing-one-would-need-a-human": 1,  # not finished: only --timeout ends such a wait (3)
}


@pytest.mark.parametrize(("state", "code"), EXIT_CODES.items())
def test_exit_codes(state: str, code: int) -> None:
    resource = fixture(state)
    assert check.exit_code(resource) == code
    assert check.finished(resource) is (not state.startswith("probing"))


def test_the_worst_verdict_sets_the_code() -> None:
    resource = fixture("failed-owned-by-the-old-uid")
    results = resource["status"]["results"]
    for phase, code in (("NeedsReauth", 66), ("ImageBroken", 64)):
        results[0]["phase"] = phase
        assert check.exit_code(resource) == code, phase
    results[0]["phase"] = "NeedsInit"  # two NeedsInit: still 65
    assert check.exit_code(resource) == 65


def test_the_table_says_what_to_do_per_slot() -> None:
    lines = check.table(fixture("failed-owned-by-the-old-uid")).splitlines()
    assert lines[0] == f"SlotImageCheck agents/check-4d5e6f: {IMAGE}"
    assert lines[1] == "Failed: 1 of 3 Slots would need a human: codex-old-uid NeedsInit (owned by 1000:1000)"
    assert lines[2] == ""
    rows = [re.split(r" {3,}", line) for line in lines[3:]]
    assert rows == [
        ["SLOT", "WOULD BE", "EXIT", "RUN AS", "OWNERS", "WHAT TO DO"],
        ["codex-1", "Ready", "0", "10001:10001", "10001:10001", "nothing: the candidate works with this slot"],
        ["codex-2", "Ready", "0", "10001:10001", "10001:10001", "nothing: the candidate works with this slot"],
        ["codex-old-uid", "NeedsInit", "65", "10001:10001", "1000:1000 (image 10001:10001)",
         "owned by 1000:1000: approve the ownership migration first (kubectl annotate slot/codex-old-uid --overwrite "
         "woved.dev/ownership-migration-requested-at=<its status.ownership.approval>)"],
    ]  # fmt: skip
    assert lines[3].index("WHAT TO DO") == lines[-1].index("owned by 1000:1000: approve")


@pytest.mark.parametrize(
    ("result", "advice"),
    [
        ({"phase": "Ready"}, "nothing: the candidate works with this slot"),
        ({"phase": "Pending"}, "no answer yet"),
        ({"phase": "NeedsInit", "message": "~/.codex/auth.json does not exist"},
         "the candidate finds no credentials: initialise the slot (log the agent in) before rolling (the probe "
         "said: ~/.codex/auth.json does not exist)"),
        ({"phase": "NeedsReauth", "message": "auth.json: not valid JSON"},
         "the candidate cannot use the credentials: re-authenticate with its CLI, or fix the image (the probe said: "
         "auth.json: not valid JSON)"),
        ({"phase": "NeedsReauth", "ownership": {"fix": "owned by 1000:1000: approve the ownership migration first"}},
         "owned by 1000:1000: approve the ownership migration first"),
        ({"phase": "ImageBroken", "message": "ErrImagePull: manifest unknown"},
         "the candidate cannot run the agent: fix the image, do not roll it (the probe said: ErrImagePull: manifest "
         "unknown)"),
        ({"phase": "NoVerdict", "attempts": 3, "reason": "ClaimNotFound", "message": "claim 'x' not found"},
         "no verdict after 3 attempt(s) (ClaimNotFound: claim 'x' not found): fix that and check again"),
    ],
)  # fmt: skip
def test_advice_per_phase(result: dict[str, Any], advice: str) -> None:
    assert check.advice(result) == advice


def test_a_check_without_an_answer_yet_reads_so() -> None:
    assert check.table(fixture("not-yet-seen")).splitlines()[1] == "not yet seen by the operator"
    timed_out = check.table(fixture("probing"), timed_out=True).splitlines()
    assert timed_out[1] == "Running: 1 of 3 Slots answered: 1 Ready (--timeout passed before the check finished)"
    assert timed_out[-1].split()[:2] == ["codex-old-uid", "Pending"]
    assert timed_out[-1].endswith("no answer yet")
    gone = check.table(fixture("queued"), deleted=True).splitlines()[1]
    assert gone.endswith("(the check was deleted: no answer will come)")


def _junit(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(text.split("\n", 1)[1])


def test_junit_has_a_case_per_slot_and_a_failure_with_the_fix() -> None:
    root = _junit(check.junit(fixture("failed-and-no-verdict")))
    (suite,) = root
    assert (root.get("tests"), root.get("failures")) == ("3", "2")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("agents/check-4d5e6f", "3", "2")
    assert (suite.get("timestamp"), suite.get("time")) == ("2026-01-02T03:00:05Z", "235")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == {"image": IMAGE, "phase": "Failed"}
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["codex-1", "codex-2", "codex-stale"]
    assert {case.get("classname") for case in cases.values()} == {"SlotImageCheck.agents.check-4d5e6f"}
    assert cases["codex-1"].find("failure") is None
    lost, stale = cases["codex-2"].find("failure"), cases["codex-stale"].find("failure")
    assert lost is not None
    assert stale is not None
    assert lost.get("type") == "NoVerdict"
    assert lost.get("message") == check.advice(fixture("failed-and-no-verdict")["status"]["results"][1])
    assert stale.get("type") == "NeedsReauth"
    assert stale.text == ("exitCode: 66\nreason: NeedsReauth\nmessage: auth.json: not valid JSON\nrunAs: 10001:10001\n"
                          "jobName: codex-stale-check-3f9a01b2c4\nowners: 10001:10001")  # fmt: skip


def test_junit_escapes_what_a_message_holds() -> None:
    resource = fixture("failed-image-broken")
    resource["status"]["results"][0]["message"] = 'pull "x" <refused> & gone'
    failure = _junit(check.junit(resource)).find(".//testcase[@name='codex-1']/failure")
    assert failure is not None
    assert failure.get("message", "").endswith('(the probe said: pull "x" <refused> & gone)')


@pytest.mark.parametrize(
    ("state", "failure"),
    [("error-no-slots-selected", "Error"), ("not-yet-seen", "Pending")],
)
def test_junit_without_slots_has_the_check_as_its_one_case(state: str, failure: str) -> None:
    root = _junit(check.junit(fixture(state)))
    (case,) = root.iter("testcase")
    assert case.get("name") == "(selection)"
    element = case.find("failure")
    assert element is not None
    assert element.get("type") == failure
    if state == "error-no-slots-selected":
        assert element.get("message") == "Error: no Slot in namespace agents matches the selector pool=codex"


def test_json_is_the_object() -> None:
    resource = fixture("succeeded")
    assert json.loads(check.as_json(resource)) == resource


# --- the command, against a stand-in for the API ---------------------------------------------------


class FakeChecks:
    """SlotClient's check calls: `states` are what the check reads as the watch goes on (None: deleted)."""

    namespace = "agents"

    def __init__(self, states: list[dict[str, Any] | None], *, exists: dict[str, Any] | None = None) -> None:
        self.states = states
        self.exists = exists
        self.created: list[dict[str, Any]] = []

    def __call__(self, **_: Any) -> FakeChecks:  # stands in for the SlotClient class
        return self

    def close(self) -> None:
        pass

    def create_check(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        assert namespace == "agents"
        if self.exists is not None:
            raise ClientError('409 slotimagechecks.woved.dev "pr-42" already exists', status=409)
        self.created.append(body)
        made = copy.deepcopy(body)
        made["metadata"] = {"name": body["metadata"].get("name", "check-x7k2p"), "namespace": namespace}
        return made

    def get_check(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.exists

    def list_checks(self, namespace: str, *, field_selector: str | None = None) -> dict[str, Any]:
        first = self.states[0]
        return {"metadata": {"resourceVersion": "1"}, "items": [] if first is None else [first]}

    def watch_checks(self, namespace: str, **_: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        for state in self.states[1:]:
            yield ("DELETED", {}) if state is None else ("MODIFIED", state)


def run(fake: FakeChecks, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(cli, "SlotClient", fake)
    return cli.main(["check", "--image", IMAGE, *args])


def test_without_wait_it_creates_and_prints_the_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeChecks([])
    assert run(fake, monkeypatch, "-l", "pool=codex", "--as", "10001:10001") == 0
    assert capsys.readouterr().out == "slotimagecheck/check-x7k2p\n"
    (body,) = fake.created
    assert body["metadata"] == {"generateName": "check-"}
    assert body["spec"] == {"image": IMAGE, "selector": {"matchLabels": {"pool": "codex"}}, "runAsUser": 10001,
                            "runAsGroup": 10001}  # fmt: skip


@pytest.mark.parametrize(("state", "code"), [(s, c) for s, c in EXIT_CODES.items() if not s.startswith("probing")])
def test_wait_exits_with_the_answer(
    state: str, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeChecks([fixture("queued"), fixture("probing"), fixture(state)])
    assert run(fake, monkeypatch, "--wait") == code
    out, err = capsys.readouterr()
    assert err == "slotimagecheck/check-x7k2p\n"  # the name; stdout is the answer alone
    assert out == check.table(fixture(state)) + "\n"


def test_wait_junit_and_json_keep_stdout_machine_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    final = fixture("failed-image-broken")
    assert run(FakeChecks([fixture("probing"), final]), monkeypatch, "--wait", "-o", "junit") == 64
    assert _junit(capsys.readouterr().out.rstrip("\n")).get("failures") == "3"
    assert run(FakeChecks([final]), monkeypatch, "--wait", "-o", "json") == 64
    assert json.loads(capsys.readouterr().out) == final


def test_a_deleted_check_gives_no_answer(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(FakeChecks([fixture("probing"), None]), monkeypatch, "--wait") == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[1].endswith("(the check was deleted: no answer will come)")
    assert err.splitlines()[-1] == "kubectl slot check: slotimagecheck/check-x7k2p was deleted before it finished"
    assert run(FakeChecks([None]), monkeypatch, "--wait") == 1


def test_timeout_first_is_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero --timeout has passed by the first look: the answer so far is printed, and 3."""
    fake = FakeChecks([fixture("probing-one-would-need-a-human"), fixture("failed-owned-by-the-old-uid")])
    assert run(fake, monkeypatch, "--wait", "--timeout", "0s", "-o", "junit") == 3
    out, err = capsys.readouterr()
    suite = _junit(out.rstrip("\n"))
    assert suite.get("failures") == "2"  # codex-2 has no answer yet, codex-old-uid would be NeedsInit
    assert err.splitlines()[-1] == "kubectl slot check: slotimagecheck/check-x7k2p has not finished within --timeout"


def test_the_same_name_twice_waits_on_the_first_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A script may render one check twice (a table for the summary, JUnit for CI) under one --name."""
    done = fixture("succeeded")
    done["metadata"]["name"] = "pr-42"
    done["spec"] = {"image": IMAGE, "ttlAfterFinished": "24h"}
    fake = FakeChecks([done], exists=done)
    assert run(fake, monkeypatch, "--name", "pr-42", "--wait") == 0
    assert fake.created == []
    assert capsys.readouterr().err == "slotimagecheck/pr-42\n"
    other = FakeChecks([done], exists={**done, "spec": {"image": IMAGE + "-rc1"}})
    assert run(other, monkeypatch, "--name", "pr-42", "--wait") == 1
    assert capsys.readouterr().err == (
        f"kubectl slot check: slotimagecheck/pr-42 exists in agents and asks another question (image {IMAGE}-rc1): "
        "choose another --name\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-l", "pool in (a"], "kubectl slot check: -l: a '(' without its ')' in 'pool in (a'"),
        (["--as", "root"], "kubectl slot check: --as: expected UID:GID (e.g. 10001:10001), got 'root'"),
        (["--as", "0:0"], "kubectl slot check: --as: the UID must be 1 to 2147483647 (never root), got 0"),
        (["--name", "PR 42"], "kubectl slot check: --name: 'PR 42' is not a DNS subdomain"),
        (["--timeout", "soon"], "kubectl slot: --timeout: invalid duration 'soon'"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeChecks([])
    assert run(fake, monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1
    assert fake.created == []


def test_an_api_refusal_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Forbidden(FakeChecks):
        def create_check(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
            raise ClientError('403 slotimagechecks.woved.dev is forbidden: User "dev" cannot create', status=403)

    assert run(Forbidden([]), monkeypatch, "--wait") == 1
    assert capsys.readouterr().err == (
        'kubectl slot: 403 slotimagechecks.woved.dev is forbidden: User "dev" cannot create\n'
    )
