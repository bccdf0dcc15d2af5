"""Join a path under a root directory, resolving symlinks as if the root were `/` (no escape through `..` or
absolute symlinks), for mount destinations and device paths inside a container's rootfs."""

from __future__ import annotations

import os
import stat

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    parts = [p for p in unsafe.split("/") if p]
    parts.reverse()
    path: list[str] = []
    links = 0
    while parts:
        c = parts.pop()
        if c == ".":
            continue
        if c == "..":
            if path:
                path.pop()
            continue
        full = root + "/" + "/".join(path + [c])
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            path.append(c)
            continue
        if not stat.S_ISLNK(st.st_mode):
            path.append(c)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(40, "too many levels of symbolic links", full)
        target = os.readlink(full)
        if target.startswith("/"):
            path = []
        rest = [p for p in target.split("/") if p]
        rest.reverse()
        parts.extend(rest)
    return root + ("/" + "/".join(path) if path else "")
