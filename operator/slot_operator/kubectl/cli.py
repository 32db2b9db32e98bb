"""The `kubectl-slot` console script: `kubectl slot list|probe|why|check` (a kubectl plugin once on PATH)."""

from __future__ import annotations

import argparse
import datetime
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

from slot_operator.kubectl import check, render, selector
from slot_operator.kubectl.client import ClientError, SlotClient
from slot_operator.logic import durations, report

# Exit codes besides a verdict's own (0 Ready, 64/65/66: logic/phases.py).
EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = report.NOT_READY_EXIT, 2, 3


def _connection_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    """kubectl's own flags, accepted before or after the command (`default` SUPPRESS on the commands)."""
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current context)")
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's, or default)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl slot", description="Look at Slots and probe them (slot-operator's kubectl plugin)."
    )
    _connection_flags(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list", help="the fleet: phase, Ready on the current spec, verdict age, image, reason"
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="Slots in every namespace")
    probe = commands.add_parser("probe", help="request a probe now; --wait for its verdict (exit 0 only when Ready)")
    probe.add_argument("names", nargs="+", metavar="NAME")
    probe.add_argument("--wait", action="store_true", help="wait for a verdict on the current spec")
    probe.add_argument("--timeout", default="5m", help="how long --wait waits (Go duration, default 5m)")
    why = commands.add_parser("why", help="the verdict, the probe's message, recent Events and the suggested fix")
    why.add_argument("name", metavar="NAME")
    checking = commands.add_parser(
        "check",
        help="probe a candidate image against the Slots before it rolls (a SlotImageCheck); --wait for the answer",
        description="Create a SlotImageCheck of IMAGE against the namespace's Slots and print its name; with --wait, "
        "what would happen to each Slot and what to do. Exit codes: 0 every Slot would be Ready; the worst "
        "verdict's code (ImageBroken 64 > NeedsReauth 66 > NeedsInit 65); 1 no answer will come (phase Error, "
        "the check deleted, an API error, bad input); 3 --timeout passed first.",
    )
    checking.add_argument("--image", required=True, help="the candidate image")
    checking.add_argument("-l", "--selector", default="", help="which Slots, kubectl's label syntax (default: all)")
    checking.add_argument("--as", dest="run_as", metavar="UID:GID",
                          help="the uid:gid the candidate runs as (default: each Slot's own)")  # fmt: skip
    checking.add_argument("--name", help="the check's name (default: generated, check-xxxxx); a check of this name "
                          "with the same question is waited on instead of created")  # fmt: skip
    checking.add_argument("--wait", action="store_true", help="wait until the check has finished")
    checking.add_argument("--timeout", default="15m", help="how long --wait waits (Go duration, default 15m)")
    checking.add_argument("-o", "--output", choices=("table", "json", "junit"), default="table",
                          help="with --wait: a table per Slot, the check as JSON, or a JUnit XML report")  # fmt: skip
    for command in (listing, probe, why, checking):
        _connection_flags(command, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    timeout = None
    body: dict[str, Any] = {}
    if args.command in ("probe", "check"):
        try:
            timeout = durations.parse_duration(args.timeout)
        except ValueError as exc:
            print(f"kubectl slot: --timeout: {exc}", file=sys.stderr)
            return EXIT_USAGE if args.command == "probe" else check.EXIT_NO_ANSWER
    if args.command == "check":
        try:
            body = _check_request(args)
        except ValueError as exc:
            print(f"kubectl slot check: {exc}", file=sys.stderr)
            return check.EXIT_NO_ANSWER
    try:
        api = SlotClient(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
    except ClientError as exc:
        print(f"kubectl slot: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.command == "list":
            return _list(api, all_namespaces=args.all_namespaces)
        if args.command == "why":
            return _why(api, args.name)
        assert timeout is not None
        if args.command == "check":
            return _check(api, body, wait=args.wait, timeout=timeout, output=args.output)
        return _probe(api, args.names, wait=args.wait, timeout=timeout)
    except ClientError as exc:
        print(f"kubectl slot: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        api.close()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _list(api: SlotClient, *, all_namespaces: bool) -> int:
    slots = api.list_slots(None if all_namespaces else api.namespace).get("items") or []
    if not slots:
        where = "any namespace" if all_namespaces else f"{api.namespace} namespace"
        print(f"No Slots found in {where}.", file=sys.stderr)
        return 0
    print(render.table(slots, all_namespaces=all_namespaces, now=_now()))
    return 0


def _why(api: SlotClient, name: str) -> int:
    slot = api.get_slot(api.namespace, name)
    if slot is None:
        print(f'kubectl slot: slot "{name}" not found in namespace {api.namespace}', file=sys.stderr)
        return EXIT_ERROR
    print(render.why(slot, api.slot_events(slot), now=_now()))
    return 0


def _probe(api: SlotClient, names: Sequence[str], *, wait: bool, timeout: datetime.timedelta) -> int:
    deadline = time.monotonic() + timeout.total_seconds()
    # A fresh token per run: the operator echoes it once it has handled this very request.
    token = f"kubectl-slot-{_now().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    answers: dict[str, report.Answer] = {}
    for name in dict.fromkeys(names):
        if api.get_slot(api.namespace, name) is None:
            answers[name] = report.Answer(code=EXIT_ERROR, word="NotFound", message=f"no Slot in {api.namespace}")
            continue
        api.request_probe(api.namespace, name, token)
        if not wait:
            print(f"slot/{name}: probe requested (token {token})")
    if wait:
        pending = [name for name in dict.fromkeys(names) if name not in answers]
        answers.update(_wait(api, pending, token=token, deadline=deadline))
    code = 0
    for name in dict.fromkeys(names):
        answer = answers.get(name)
        if answer is None:
            continue
        print(f"slot/{name}: {answer.word}" + (f": {answer.message}" if answer.message else ""))
        code = code or answer.code
    return code


def _wait(api: SlotClient, names: list[str], *, token: str, deadline: float) -> dict[str, report.Answer]:
    """Watch the Slots until each answers the request or the deadline passes."""
    answers: dict[str, report.Answer] = {}
    seen: dict[str, report.SlotView] = {}
    # One Slot: watch only it; several: the namespace's Slots, filtered here.
    selector = f"metadata.name={names[0]}" if len(names) == 1 else None

    def take(slot: dict[str, object], *, deleted: bool) -> None:
        view = report.view(slot)
        if view.name not in names or view.name in answers:
            return
        if deleted:
            answers[view.name] = report.Answer(code=EXIT_ERROR, word="Deleted", message="the Slot was deleted")
            return
        seen[view.name] = view
        answer = report.probe_answer(view, token)
        if answer is not None:
            answers[view.name] = answer

    while len(answers) < len(names):
        listing = api.list_slots(api.namespace, field_selector=selector)
        for slot in listing.get("items") or []:
            take(slot, deleted=False)
        for name in names:
            if name not in seen and name not in answers:
                answers[name] = report.Answer(code=EXIT_ERROR, word="Deleted", message="the Slot was deleted")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(answers) == len(names):
            break
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        for kind, slot in api.watch_slots(
            api.namespace, resource_version=version, timeout=int(remaining) + 1, field_selector=selector
        ):
            take(slot, deleted=kind == "DELETED")
            if len(answers) == len(names) or time.monotonic() >= deadline:
                break
    for name in names:
        if name not in answers:
            view = seen[name]
            answers[name] = report.Answer(
                code=EXIT_TIMEOUT,
                word="NoVerdict",
                message=f"no verdict on the current spec in time (phase {view.phase.value}, {view.reason}"
                + (f": {view.message})" if view.message else ")"),
            )
    return answers


def _check_request(args: argparse.Namespace) -> dict[str, Any]:
    """The SlotImageCheck the flags ask for; ValueError naming the flag that is wrong."""
    try:
        labels = selector.parse(args.selector)
    except ValueError as exc:
        raise ValueError(f"-l: {exc}") from None
    try:
        run_as = check.parse_run_as(args.run_as) if args.run_as is not None else None
    except ValueError as exc:
        raise ValueError(f"--as: {exc}") from None
    return check.request(image=args.image, selector=labels, run_as=run_as, name=args.name)


def _check(api: SlotClient, body: dict[str, Any], *, wait: bool, timeout: datetime.timedelta, output: str) -> int:
    """Create the check (or find the same one under --name), print its name; with --wait, its answer."""
    deadline = time.monotonic() + timeout.total_seconds()
    try:
        created = api.create_check(api.namespace, body)
    except ClientError as exc:
        name = body["metadata"].get("name")
        existing = api.get_check(api.namespace, name) if exc.status == 409 and name else None
        if existing is None:
            raise
        if not check.same_question(existing, body):
            image = (existing.get("spec") or {}).get("image")
            print(f"kubectl slot check: slotimagecheck/{name} exists in {api.namespace} and asks another question "
                  f"(image {image}): choose another --name", file=sys.stderr)  # fmt: skip
            return check.EXIT_NO_ANSWER
        created = existing
    name = str(created["metadata"]["name"])
    print(f"slotimagecheck/{name}", file=sys.stderr if wait else sys.stdout)
    if not wait:
        return 0
    last, outcome = _wait_check(api, name, deadline=deadline)
    last = last or created
    timed_out, deleted = outcome == "timeout", outcome == "deleted"
    if output == "json":
        print(check.as_json(last))
    elif output == "junit":
        print(check.junit(last, timed_out=timed_out, deleted=deleted))
    else:
        print(check.table(last, timed_out=timed_out, deleted=deleted))
    if deleted:
        print(f"kubectl slot check: slotimagecheck/{name} was deleted before it finished", file=sys.stderr)
        return check.EXIT_NO_ANSWER
    if timed_out:
        print(f"kubectl slot check: slotimagecheck/{name} has not finished within --timeout", file=sys.stderr)
        return check.EXIT_TIMEOUT
    return check.exit_code(last)


def _wait_check(api: SlotClient, name: str, *, deadline: float) -> tuple[dict[str, Any] | None, str]:
    """Watch the check until it finished, was deleted or the deadline passed: (the last seen, what ended it)."""
    by_name = f"metadata.name={name}"
    last: dict[str, Any] | None = None
    while True:
        listing = api.list_checks(api.namespace, field_selector=by_name)
        items = listing.get("items") or []
        if not items:
            return last, "deleted"
        last = dict(items[0])
        if check.finished(last):
            return last, "finished"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last, "timeout"
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        for kind, seen in api.watch_checks(
            api.namespace, resource_version=version, timeout=int(remaining) + 1, field_selector=by_name
        ):
            if kind == "DELETED":
                return last, "deleted"
            if kind not in ("ADDED", "MODIFIED"):  # an ERROR event: list again
                break
            last = seen
            if check.finished(last):
                return last, "finished"
            if time.monotonic() >= deadline:
                return last, "timeout"
