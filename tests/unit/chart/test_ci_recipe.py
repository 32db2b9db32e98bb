"""examples/ci: the tag-bump pull request recipe, walked through on real git repositories.

`check-image-bump.sh --find BASE HEAD` must find the new agent image in a pull request's diff (a kustomize
`newTag:`, a Slot's `image:`), and nothing else; the full run hands it to `kubectl slot check` (a stand-in
kubectl here that records its arguments; the real plugin runs the same flags in
tests/integration/test_kubectl_slot_check.py), leaves the JUnit report and the summary, and exits with the
plugin's code. The GitHub Actions workflow that runs it is checked too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import ci_repo

WORKFLOW = ci_repo.ROOT / "examples" / "ci" / "github-actions" / "check-image-bump.yaml"
SCRIPT, IMAGE = ci_repo.SCRIPT, ci_repo.IMAGE
commit, edit, bump_tag = ci_repo.commit, ci_repo.edit, ci_repo.bump_tag


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return ci_repo.make(tmp_path / "gitops")


def find(repo: Path, *args: str, **env: str) -> list[str]:
    result = subprocess.run(["sh", str(SCRIPT), "--find", *args], cwd=repo, capture_output=True, text=True,
                            check=False, timeout=60, env={**os.environ, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_kustomize_tag_bump_is_one_new_image(repo: Path) -> None:
    bump_tag(repo, "sha-4d5e6f-codex")
    commit(repo, "bump")
    assert find(repo, "base", "HEAD") == [f"{IMAGE}:sha-4d5e6f-codex"]
    assert find(repo, "base") == [f"{IMAGE}:sha-4d5e6f-codex"]  # HEAD by default
    assert find(repo, "HEAD", "HEAD") == []


def test_a_slot_image_line_and_quoted_or_commented_values(repo: Path) -> None:
    edit(repo, "examples/gitops/argocd/agents/slots.yaml", f"  image: {IMAGE}\n---",
         f"  image: \"{IMAGE}:sha-777777-codex\"  # pinned\n---")  # fmt: skip
    commit(repo, "pin one slot")
    assert find(repo, "base", "HEAD") == [f"{IMAGE}:sha-777777-codex"]


def test_new_name_and_digest_and_a_new_file(repo: Path) -> None:
    digest = "sha256:" + "ab" * 32
    (repo / "agents").mkdir()
    (repo / "agents" / "kustomization.yaml").write_text(
        "images:\n"
        f"- name: {IMAGE}\n  newName: registry.example:5000/mirror/agent-shell\n  newTag: sha-9\n"
        "- name: ghcr.io/example/sidecar\n  digest: " + digest + "\n"
        "resources: [slots.yaml]\n"
    )
    commit(repo, "mirror")
    assert find(repo, "base", "HEAD") == [
        f"ghcr.io/example/sidecar@{digest}",
        "registry.example:5000/mirror/agent-shell:sha-9",
    ]
    assert find(repo, "base", "HEAD", IMAGE_NAME="registry.example:5000/mirror/agent-shell") == [
        "registry.example:5000/mirror/agent-shell:sha-9"
    ]


@pytest.mark.parametrize(
    ("relative", "old", "new"),
    [
        ("README.md", "agents", "agents, now with a CI check"),
        ("examples/gitops/flux/agents.yaml", "timeout: 15m", "timeout: 20m"),
        # An image without a tag says nothing about the tag that rolls (kustomize sets it).
        ("examples/gitops/argocd/agents/workers.yaml", f"image: {IMAGE}\n", "image: ghcr.io/example/other\n"),
        ("examples/gitops/flux/slots/kustomization.yaml", "    newTag: sha-1a2b3c-codex\n", ""),  # removed only
    ],
)
def test_what_is_not_a_new_image(repo: Path, relative: str, old: str, new: str) -> None:
    edit(repo, relative, old, new)
    commit(repo, "other")
    assert find(repo, "base", "HEAD") == []


def test_a_changed_image_name_with_the_same_tag_is_new(repo: Path) -> None:
    edit(repo, "examples/gitops/argocd/agents/kustomization.yaml", f"- name: {IMAGE}", "- name: ghcr.io/example/agent")
    commit(repo, "rename")
    assert find(repo, "base", "HEAD") == ["ghcr.io/example/agent:sha-1a2b3c-codex"]


# --- the whole run, with a stand-in kubectl --------------------------------------------------------


FAKE_KUBECTL = """#!/bin/sh
# Records each call; answers like `kubectl slot check` with FAKE_CODE.
printf '%s\\n' "$*" >> "$FAKE_CALLS"
case "$*" in
    *"-o junit"*) printf '<testsuites tests="3" failures="1"/>\\n' ;;
    *) printf 'SLOT   WOULD BE\\ncodex-old-uid   NeedsInit\\n' ;;
esac
exit "$FAKE_CODE"
"""


def run(
    repo: Path, tmp_path: Path, *, code: int = 65, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir(exist_ok=True)
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    environment = {**os.environ, "PATH": f"{kubectl.parent}:{os.environ['PATH']}", "FAKE_CALLS": str(calls),
                   "FAKE_CODE": str(code), "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "2", **env}  # fmt: skip
    for key in ("GITHUB_STEP_SUMMARY", "CHECK_NAMESPACE", "SLOT_SELECTOR", "CHECK_AS", "JUNIT_FILE", "CHECK_NAME"):
        if key not in env:
            environment.pop(key, None)
    result = subprocess.run(["sh", str(SCRIPT), "base", "HEAD"], cwd=repo, capture_output=True, text=True,
                            check=False, timeout=60, env=environment)  # fmt: skip
    return result, calls.read_text().splitlines()


@pytest.mark.parametrize("code", [0, 65, 64, 1, 3])
def test_the_run_fails_with_the_plugins_code_and_leaves_junit_and_summary(
    repo: Path, tmp_path: Path, code: int
) -> None:
    bump_tag(repo, "sha-4d5e6f-codex")
    commit(repo, "bump")
    summary, junit = tmp_path / "summary.md", tmp_path / "reports" / "slots.xml"
    junit.parent.mkdir()
    settings = {"GITHUB_STEP_SUMMARY": str(summary), "JUNIT_FILE": str(junit), "CHECK_NAMESPACE": "agents",
                "SLOT_SELECTOR": "pool in (codex, claude)", "CHECK_AS": "10001:10001"}  # fmt: skip
    result, calls = run(repo, tmp_path, code=code, **settings)
    assert result.returncode == code, result.stderr
    common = (f"slot check --image {IMAGE}:sha-4d5e6f-codex --name ci-4242-2 -n agents -l pool in (codex, claude) "
              "--as 10001:10001 --wait")  # fmt: skip
    assert calls == [f"{common} --timeout 30m -o junit", f"{common} --timeout 1m -o table"]
    assert junit.read_text() == '<testsuites tests="3" failures="1"/>\n'
    text = summary.read_text()
    assert text.startswith(f"### Slot image check: `{IMAGE}:sha-4d5e6f-codex`\n\n```\nSLOT   WOULD BE\n"
                           "codex-old-uid   NeedsInit\n```\n")  # fmt: skip
    assert "codex-old-uid   NeedsInit" in result.stdout
    verdict = text.splitlines()[-1]
    assert verdict == result.stdout.splitlines()[-1]
    says = {0: "every selected Slot would be Ready", 65: "a Slot would need a human first",
            64: "a Slot would need a human first", 1: "no answer", 3: "the check did not finish"}  # fmt: skip
    assert verdict.startswith(says[code])


def test_the_run_passes_every_flag_as_one_argument(repo: Path, tmp_path: Path) -> None:
    """A selector with spaces stays one argument; unset settings add no flag."""
    bump_tag(repo, "sha-4d5e6f-codex")
    commit(repo, "bump")
    recorder = tmp_path / "bin" / "kubectl"
    recorder.parent.mkdir()
    args_file = tmp_path / "args"
    recorder.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done >> {shlex.quote(str(args_file))}\n'
                        f'echo >> {shlex.quote(str(args_file))}\n')  # fmt: skip
    recorder.chmod(0o755)
    env = {**os.environ, "PATH": f"{recorder.parent}:{os.environ['PATH']}", "SLOT_SELECTOR": "pool in (a, b)",
           "JUNIT_FILE": str(tmp_path / "j.xml"), "CHECK_NAME": "pr-7"}  # fmt: skip
    for key in ("CHECK_NAMESPACE", "CHECK_AS", "GITHUB_STEP_SUMMARY"):
        env.pop(key, None)
    subprocess.run(["sh", str(SCRIPT), "base"], cwd=repo, capture_output=True, text=True, check=True, timeout=60,
                   env=env)  # fmt: skip
    first = args_file.read_text().splitlines()[0]
    assert first == (f"[slot][check][--image][{IMAGE}:sha-4d5e6f-codex][--name][pr-7][-l][pool in (a, b)][--wait]"
                     "[--timeout][30m][-o][junit]")  # fmt: skip


def test_nothing_to_check_passes_without_calling_kubectl(repo: Path, tmp_path: Path) -> None:
    edit(repo, "README.md", "agents", "docs only")
    commit(repo, "docs")
    summary = tmp_path / "summary.md"
    result, calls = run(repo, tmp_path, GITHUB_STEP_SUMMARY=str(summary))
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert "nothing to check" in summary.read_text()


def test_two_new_images_are_refused_without_calling_kubectl(repo: Path, tmp_path: Path) -> None:
    edit(repo, "examples/gitops/flux/slots/kustomization.yaml", "newTag: sha-1a2b3c-codex", "newTag: sha-a-codex")
    edit(repo, "examples/gitops/argocd/agents/kustomization.yaml", "newTag: sha-1a2b3c-codex", "newTag: sha-b-codex")
    commit(repo, "two")
    result, calls = run(repo, tmp_path)
    assert result.returncode == 1
    assert calls == []
    assert "more than one new image" in result.stderr
    assert f"{IMAGE}:sha-a-codex" in result.stderr
    assert f"{IMAGE}:sha-b-codex" in result.stderr


# --- the workflow -----------------------------------------------------------------------------------


def workflow() -> dict[str, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def test_the_workflow_runs_the_script_on_pull_requests_with_the_base_fetched() -> None:
    flow = workflow()
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    (job,) = flow["jobs"].values()
    steps = job["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base commit is needed for the diff
    (check_step,) = [s for s in steps if "check-image-bump.sh" in str(s.get("run", ""))]
    assert "examples/ci/check-image-bump.sh" in check_step["run"]
    assert "github.event.pull_request.base.sha" in check_step["run"]
    env = check_step["env"]
    assert set(env) <= {"KUBECONFIG", "IMAGE_NAME", "CHECK_NAMESPACE", "SLOT_SELECTOR", "CHECK_AS", "CHECK_TIMEOUT",
                        "CHECK_NAME", "JUNIT_FILE"}  # fmt: skip
    for name in env:
        assert name in SCRIPT.read_text(), name  # every setting the workflow gives, the script reads
    # The JUnit report is kept whatever the outcome, from where the script writes it.
    keep = [s for s in steps if s.get("if") == "always()" and env["JUNIT_FILE"] in str(s.get("with", {}))]
    assert keep, "no step keeps the JUnit report"
    assert steps.index(check_step) < steps.index(keep[0])
