"""The container's root filesystem as containerd hands it over: a list of mounts (an overlay of the image's
snapshots, or a bind of one) that the shim mounts on BUNDLE/rootfs before `rune create` and unmounts at delete."""

from __future__ import annotations

import os

PAGE = 4096


class RootfsError(Exception):
    pass


def mount_all(mounts: list, target: str) -> None:
    """Mount containerd's mounts (api.Mount: type, source, options) on target, in order."""
    from inclavare.linux import mountopts
    from inclavare.linux import syscalls as sc

    done = 0
    try:
        for m in mounts:
            flags, prop, data, _extra = mountopts.parse(list(m.options))
            if len(data) >= PAGE:
                raise RootfsError(f"the {m.type} mount options for {target} are {len(data)} bytes long, over the "
                                  f"kernel's {PAGE - 1}-byte limit (an image with very many layers)")
            try:
                sc.mount(m.source, target, m.type, flags & ~sc.MS_REMOUNT, data or None)
                done += 1
                if flags & sc.MS_BIND and flags & sc.MS_RDONLY:  # a bind mount is made read-only by a remount
                    sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
                for p in prop:
                    sc.mount(None, target, None, p)
            except OSError as e:
                raise RootfsError(f"failed to mount the rootfs ({m.type} {m.source}) on {target}: "
                                  f"{e.strerror or e}") from None
    except BaseException:
        for _ in range(done):
            try:
                sc.umount2(target, sc.MNT_DETACH)
            except OSError:
                break
        raise


def unmount_all(target: str) -> None:
    """Unmount everything stacked on target (nothing to do when nothing is mounted)."""
    if not is_mountpoint(target):
        return  # the delete subcommand after a clean shutdown: no syscall wrapper to load
    from inclavare.linux import syscalls as sc

    for _ in range(64):
        if not is_mountpoint(target):
            return
        try:
            sc.umount2(target, 0)
        except OSError:
            try:
                sc.umount2(target, sc.MNT_DETACH)
            except OSError:
                return


def is_mountpoint(path: str) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split(" ", 5)[4]
                if "\\" in mp:
                    mp = mp.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
                if mp == real:
                    return True
    except OSError:
        return False
    return False
