"""A minimal OCI bundle on a busybox-static root filesystem, for the demo, the benchmarks and the tests."""

from __future__ import annotations

import json
import os
import shutil

APPLETS = ("sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "hostname", "mount", "ps", "env", "pwd", "grep",
           "wc", "head", "tail", "touch", "mkdir", "rm", "readlink", "stat", "test", "kill", "dd", "umask", "nproc",
           "uname", "domainname", "tty", "stty", "sysctl", "ip", "ifconfig", "chmod", "printf", "seq", "yes",
           "timeout", "ulimit", "md5sum", "tr", "cut", "od", "hexdump", "xxd", "base64", "sha256sum", "cp", "ln", "find",
           "sed", "awk", "expr", "usleep", "whoami", "df", "du", "free", "top", "vi", "less", "more")  # fmt: skip


def find_busybox() -> str:
    for p in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if p and os.path.exists(p):
            return p
    raise FileNotFoundError("busybox not found: install busybox-static")


def build_rootfs(root: str, busybox: str | None = None) -> str:
    """Populate root with busybox, its applet links, /etc/passwd and /etc/group; return root."""
    busybox = busybox or find_busybox()
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "home/user"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
    for a in APPLETS:
        link = os.path.join(root, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nuser:x:1000:\n")
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    return root


def make_bundle(bundle: str, args: list[str], rootfs: str | None = None, terminal: bool = False) -> str:
    """A bundle directory with config.json (rune's default spec) running args; builds bundle/rootfs unless
    rootfs names one to share."""
    from inclavare.oci import spec

    os.makedirs(bundle, exist_ok=True)
    config = spec.default(args)
    config["process"]["terminal"] = terminal
    if rootfs is None:
        build_rootfs(os.path.join(bundle, "rootfs"))
    else:
        config["root"]["path"] = os.path.abspath(rootfs)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f, indent="\t")
    return bundle
