"""A GitOps repository made in a temporary directory for the CI recipe (examples/ci/check-image-bump.sh):
the recipes of examples/gitops committed as `base`, and the edits a tag-bump pull request makes.

Shared by tests/unit/chart/test_ci_recipe.py (the script's tag finding, a stand-in kubectl) and
tests/integration/test_kubectl_slot_check.py (the script with the real plugin and API server).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "check-image-bump.sh"
GITOPS = ROOT / "examples" / "gitops"
IMAGE = "ghcr.io/example/agent-shell"
OLD_TAG = "sha-1a2b3c-codex"


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env,
                          timeout=60).stdout  # fmt: skip


def make(path: Path) -> Path:
    """The repository, with examples/gitops at the current tag and a README, committed and tagged `base`."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for source in sorted(GITOPS.rglob("*.yaml")):
        target = path / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    (path / "README.md").write_text("agents\n")
    commit(path, "base")
    git(path, "tag", "base")
    return path


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new))


def bump_tag(repo: Path, tag: str) -> None:
    """What a Renovate pull request does to the recipes: one newTag per kustomization."""
    for part in ("examples/gitops/flux/slots", "examples/gitops/flux/workers", "examples/gitops/argocd/agents"):
        edit(repo, f"{part}/kustomization.yaml", f"newTag: {OLD_TAG}", f"newTag: {tag}")
