"""Pure pieces of devcluster/isolation.py: subordinate id files, the id maps handed to newuidmap, map coverage.

Entering the namespace for real, as an unprivileged account, is tests/integration/test_rootless.py.
"""

from __future__ import annotations

import pytest

from devcluster.isolation import IdRange, id_map, mapped_from_zero, parse_subordinate
from tests import repo

REPO = repo.ROOT

SUBUID = """\
# comment
alice:100000:65536
bob:165536:65536
1003:231072:1000
alice:300000:10
broken:line
carol:x:65536
dave:400000:0
"""


@pytest.mark.parametrize(
    ("user", "uid", "expected"),
    [
        pytest.param(
            "alice", 1001, [IdRange(start=100000, count=65536), IdRange(start=300000, count=10)], id="name-two-ranges"
        ),
        pytest.param("erin", 1003, [IdRange(start=231072, count=1000)], id="numeric-uid"),
        pytest.param("carol", 1004, [], id="malformed-start"),
        pytest.param("dave", 1005, [], id="empty-range"),
        pytest.param("nobody-here", 1006, [], id="absent"),
    ],
)
def test_parse_subordinate(user: str, uid: int, expected: list[IdRange]) -> None:
    assert parse_subordinate(SUBUID, user=user, uid=uid) == expected


def test_id_map_puts_own_id_at_zero_and_ranges_after_each_other() -> None:
    ranges = [IdRange(start=100000, count=65536), IdRange(start=300000, count=10)]
    assert id_map(1001, ranges) == ["0", "1001", "1", "1", "100000", "65536", "65537", "300000", "10"]


@pytest.mark.parametrize(
    ("uid_map", "covered"),
    [
        pytest.param("0 0 4294967295\n", 4294967295, id="host"),
        pytest.param("0 1001 1\n1 100000 65536\n", 65537, id="rootless"),
        pytest.param("         1     100000      65536\n         0       1001          1\n", 65537, id="unsorted"),
        pytest.param("0 1001 1\n", 1, id="unshare-r"),
        pytest.param("0 1001 1\n2 100000 65536\n", 1, id="gap"),
        pytest.param("", 0, id="none"),
    ],
)
def test_mapped_from_zero(uid_map: str, covered: int) -> None:
    assert mapped_from_zero(uid_map) == covered
