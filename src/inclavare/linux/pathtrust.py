"""Whether someone but root could change what a host path names: the file and every directory above it."""

from __future__ import annotations

import os
import stat


def writable_by_others(path: str) -> str:
    """Why someone but root (or this process's own user) could change what `path` names, or "" when no one can.
    Every directory on the way, as the path names it and as its real path runs (a symlink on the way can be
    re-pointed only by whoever may write the directory holding it), and the file itself must be root's and
    writable by neither group nor others; a sticky directory (/tmp) may be world-writable, as no one else can
    replace root's entries in it."""
    real = os.path.realpath(path)
    seen = set()
    for end in (os.path.abspath(path), real):
        p = end
        while p not in seen:
            seen.add(p)
            try:
                st = os.lstat(p)
            except OSError as e:
                return f"{p} cannot be examined ({e.strerror})"
            if not stat.S_ISLNK(st.st_mode):  # a symlink's own mode and owner change nothing: its directory does
                what = "it" if p == real else f"the directory {p}"
                if st.st_uid not in (0, os.geteuid()):  # root's, or a rootless rune's own
                    return f"{what} is owned by uid {st.st_uid}"
                if st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and p != real):
                    return f"{what} is writable by its {'group' if st.st_mode & 0o020 else 'others'}"
            if p == "/":
                break
            p = os.path.dirname(p)
    return ""
