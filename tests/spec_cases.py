"""Hostile and careless `spec.mountPath` values, with the answer both the CRD's CEL rules and the operator give.

Shared by tests/unit/operator/test_spec.py (logic/spec.py) and tests/integration/test_spec_validation.py
(the real API server), so the two checks cannot drift apart.
"""

from __future__ import annotations

_DOTS = "must not contain '..' (where it leads depends on symlinks in the image), got "
_NEEDED = ", which the container itself needs"
_DOLLAR = "must not contain '$' (Kubernetes would expand $(VAR) in HOME but not in the mount), got "

# Accepted spelling -> the path the probe mounts (and uses as HOME).
ACCEPTED: dict[str, str] = {
    "/home/codex": "/home/codex",
    "/home//codex/": "/home/codex",
    "/home/./codex/.": "/home/codex",
    "//opt/agent//": "/opt/agent",
    "/tmp/agent": "/tmp/agent",
    "/tmpfs": "/tmpfs",
    "/var/runner": "/var/runner",
    "/srv/usr": "/srv/usr",
}

# Rejected spelling -> the message after "spec.mountPath: ".
REJECTED: dict[str, str] = {
    "/": "/ is the root directory",
    "//": "// is the root directory",
    "/.": "/. is the root directory",
    "/./": "/./ is the root directory",
    "/tmp": "/tmp is /tmp, the probe's scratch space; choose another path",
    "/tmp/": "/tmp/ is /tmp, the probe's scratch space; choose another path",
    "//tmp": "//tmp is /tmp, the probe's scratch space; choose another path",
    "/./tmp//.": "/./tmp//. is /tmp, the probe's scratch space; choose another path",
    "/home/..": _DOTS + "/home/..",
    "/home/../tmp": _DOTS + "/home/../tmp",
    "/home/codex/../../etc": _DOTS + "/home/codex/../../etc",
    "home/codex": "must be an absolute path (starting with /), got home/codex",
    "./home": "must be an absolute path (starting with /), got ./home",
    "/proc": "/proc is under /proc" + _NEEDED,
    "/proc/self/root": "/proc/self/root is under /proc" + _NEEDED,
    "//sys/": "//sys/ is under /sys" + _NEEDED,
    "/dev/shm": "/dev/shm is under /dev" + _NEEDED,
    "/etc": "/etc is under /etc" + _NEEDED,
    "/./etc/ssl": "/./etc/ssl is under /etc" + _NEEDED,
    "/usr/local/agent": "/usr/local/agent is under /usr" + _NEEDED,
    "/var/run/secrets": "/var/run/secrets is under /var/run" + _NEEDED,
    "/run": "/run is under /run" + _NEEDED,
    "/bin/": "/bin/ is under /bin" + _NEEDED,
    "/lib64/x": "/lib64/x is under /lib64" + _NEEDED,
    "/home/$(AGENT)": _DOLLAR + "/home/$(AGENT)",
    "/home/codex$": _DOLLAR + "/home/codex$",
}
