"""inclavare.linux.mountinfo: the table's tree as a lookup sees it."""

from __future__ import annotations

from inclavare.linux import mountinfo

TABLE = b"""\
20 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
30 20 0:40 / /b/root rw master:1 - overlay overlay rw
31 30 0:40 / /b/root rw - overlay overlay rw
32 31 0:5 / /b/root/proc rw - proc proc rw
33 31 8:1 /src /b/root/etc/app rw master:1 - ext4 /dev/sda1 rw
34 33 8:1 /evil /b/root/etc/app rw - ext4 /dev/sda1 rw
35 33 8:1 /x /b/root/etc/app/hidden rw master:1 - ext4 /dev/sda1 rw
36 34 0:41 / /b/root/etc/app/sub rw unbindable - tmpfs tmpfs rw
37 31 8:1 /v /b/root/my\\040vol rw - ext4 /dev/sda1 rw
38 20 8:1 / /b/rootless rw - ext4 /dev/sda1 rw
"""


def test_the_mounts_under_a_root_are_the_topmost_of_each_stack_with_their_subtrees():
    mounts = mountinfo.parse(TABLE)
    root, found = mountinfo.under(mounts, "/b/root")
    assert root.id == 31  # the bind of the rootfs onto itself, over the rootfs's own mount
    tops = {top.point: (top.id, sorted(m.id for m in subtree)) for top, subtree in found}
    assert tops == {"/b/root/proc": (32, [32]), "/b/root/etc/app": (34, [33, 34, 35, 36]),
                    "/b/root/my vol": (37, [37])}
    by_id = {m.id: m for m in mounts}
    assert by_id[33].propagates and not by_id[34].propagates and by_id[36].tags == ("unbindable",)


def test_a_root_that_is_no_mount_point_is_served_by_the_mount_above_it():
    root, found = mountinfo.under(mountinfo.parse(TABLE), "/b")
    assert root.id == 20 and sorted(top.id for top, _ in found) == [31, 38]  # the topmost of /b/root's stack
    root, found = mountinfo.under(mountinfo.parse(TABLE), "/b/rootless/x")
    assert root.id == 38 and found == []
