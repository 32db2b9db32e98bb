"""Commands the make targets need from the host's packages: installed with apt-get when root, named otherwise.

As root (a fresh machine, CI) the README's commands set up what they need themselves; an ordinary
user gets one message naming every missing Debian package and the command that installs it.
Standard library only: the preflight uses it before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


class MissingTools(RuntimeError):
    """Commands are missing and cannot be installed here; the message names the packages to install."""


def _log(message: str) -> None:
    print(f"[host-tools] {message}", file=sys.stderr, flush=True)


def missing(tools: dict[str, str]) -> dict[str, str]:
    """The commands of `tools` (command -> Debian package) that are not on PATH."""
    return {command: package for command, package in tools.items() if shutil.which(command) is None}


def advice(absent: dict[str, str], *, why: str) -> str:
    """What to install for the missing commands `absent` (command -> Debian package)."""
    packages = " ".join(sorted(set(absent.values())))
    return f"{', '.join(sorted(absent))} not found ({why}): install {packages} (sudo apt-get install {packages})"


def ensure(tools: dict[str, str], *, why: str) -> None:
    """Each command (command -> Debian package) on PATH: installed with apt-get as root, else MissingTools."""
    absent = missing(tools)
    if not absent:
        return
    packages = sorted(set(absent.values()))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingTools(advice(absent, why=why))
    _log(f"installing {' '.join(packages)} ({why}; running as root)")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *packages]
    # A fresh machine has no package lists yet: update only when the first attempt finds nothing.
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
            raise MissingTools(f"apt-get install {' '.join(packages)} failed (exit {proc.returncode}):\n{tail}")
    still = missing(tools)
    if still:
        raise MissingTools(f"installed {' '.join(packages)}, but {', '.join(sorted(still))} is still not on PATH")
    _log(f"installed {' '.join(packages)} in {time.monotonic() - started:.0f}s")
