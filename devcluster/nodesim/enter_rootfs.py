"""Last step of starting a container from an OCI image: chroot, identity, capabilities, exec.

Run by the container setup script (inside the container's private mount namespace,
with the image's root filesystem and the pod's volumes already mounted under ROOT)
as `python3 -I -S enter_rootfs.py ROOT WORKDIR UID GID GROUPS CAPS NNP -- ARGV...`:
the host's interpreter is already loaded when it chroots, so the image needs no
helper of its own. GROUPS is a comma list of supplementary gids; CAPS is `all`, or a
comma list of capability names to keep (`CHOWN,DAC_OVERRIDE`), or empty for none;
NNP is 1 to set no_new_privs. Standard library only: it may run under `python3 -S`.
Exit 127 with a kubelet-style message when ARGV[0] is not found in the image.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAPABILITY_VERSION_3 = 0x20080522
CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def capability_numbers(spec: str) -> set[int]:
    """`all`, empty, or names with or without the CAP_ prefix (as in a pod's securityContext)."""
    if spec == "all":
        return set(range(len(CAPABILITIES)))
    numbers = set()
    for name in filter(None, spec.split(",")):
        bare = name.upper().removeprefix("CAP_")
        if bare not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}")
        numbers.add(CAPABILITIES.index(bare))
    return numbers


def _check(libc: ctypes.CDLL, result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _drop_bounding_set(libc: ctypes.CDLL, keep: set[int], *, last: int) -> None:
    for cap in range(last + 1):
        if cap not in keep:
            _check(libc, libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")


def _set_capabilities(libc: ctypes.CDLL, keep: set[int]) -> None:
    """effective = permitted = inheritable = keep (only ever a subset of what the process has)."""
    mask = [0, 0]
    for cap in keep:
        mask[cap // 32] |= 1 << (cap % 32)
    data = (_Data * 2)(*(_Data(m, m, m) for m in mask))
    _check(libc, libc.capset(ctypes.byref(_Header(CAPABILITY_VERSION_3, 0)), data), "capset")


def main(argv: list[str]) -> int:
    root, workdir, uid, gid, groups, caps, nnp, separator, *command = argv
    if separator != "--" or not command:
        print("usage: enter_rootfs.py ROOT WORKDIR UID GID GROUPS CAPS NNP -- ARGV...", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    keep = capability_numbers(caps)
    with open("/proc/sys/kernel/cap_last_cap") as handle:  # the image need not have /proc mounted
        last_cap = int(handle.read())
    os.chroot(root)
    os.chdir(workdir)
    program = command[0] if "/" in command[0] else shutil.which(command[0], path=os.environ.get("PATH", ""))
    if program is None or not os.path.isfile(program):
        print(f'exec: "{command[0]}": executable file not found in $PATH', file=sys.stderr)
        return 127
    # Bounding set, groups and ids while still fully privileged (they need SETPCAP, SETGID, SETUID);
    # then the process's own sets: a container that stays root keeps exactly `keep`, any other uid
    # none (a uid change away from 0 already cleared effective and permitted; inheritable goes too).
    _drop_bounding_set(libc, keep, last=last_cap)
    os.setgroups([int(g) for g in filter(None, groups.split(","))])
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))
    _set_capabilities(libc, keep if int(uid) == 0 else set())
    if nnp == "1":
        _check(libc, libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # Credentials changed: set the parent-death signal again (the kernel cleared it), as setpriv does.
    _check(libc, libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    os.execv(program, command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
