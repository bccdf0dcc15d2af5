"""The image inclavare-containers/node-installer:0.1.0 of deploy/kubernetes, built here without a registry.

deploy/kubernetes/node-installer/Dockerfile installs the package of `make deb` into debian:bookworm-slim with apt.
Nothing is pulled in the tests, so the same image is put together from this machine, itself Debian 12: the files of
the Debian packages apt would install for the .deb's Depends (python3.11, libseccomp2 and what they need; neither
perl nor the documentation, which the daemons never use) copied from the installed packages, busybox for a shell,
and the .deb unpacked as dpkg would. Any shared library an extension module of the package's private environment
links to and those packages lack is added from the machine too, so the image runs what the package runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.engines import daemons as d

REF = "docker.io/inclavare-containers/node-installer:0.1.0"
SKIP_PACKAGES = ("perl", "libperl", "dpkg", "tar", "install-info", "mailcap", "mime-support", "media-types")
SKIP_DIRS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/lintian")


def packages(deb: Path) -> list[str]:
    """The installed Debian packages apt would pull in for the .deb's Depends (python3.11, libseccomp2)."""
    depends = d.run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    roots = [dep.split()[0] for dep in depends.split(",") if dep.strip()]
    out = d.run(["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests",
                 "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *roots]).stdout
    names = {line.strip() for line in out.splitlines() if line and not line.startswith(" ")}
    return sorted(n for n in names if not n.startswith(SKIP_PACKAGES) and not n.startswith("<"))


def _copy(src: str, rootfs: Path) -> None:
    dest = rootfs / src.lstrip("/")
    if os.path.islink(src):
        if not dest.is_symlink() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest)
    elif os.path.isdir(src):
        dest.mkdir(parents=True, exist_ok=True)
    elif os.path.isfile(src) and not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _missing_libraries(rootfs: Path) -> set[str]:
    """Host paths of the libraries the image's ELF files need and it does not have."""
    need = set()
    for p in rootfs.rglob("*"):
        if p.is_symlink() or not p.is_file() or not (p.suffix == ".so" or ".so." in p.name or os.access(p, os.X_OK)):
            continue
        if not _elf(p):
            continue
        out = subprocess.run(["ldd", str(p)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "=>" in line and "/" in line.split("=>", 1)[1]:
                lib = line.split("=>", 1)[1].split("(")[0].strip()
                if lib.startswith(str(rootfs)):
                    continue
                if not (rootfs / lib.lstrip("/")).exists():
                    need.add(lib)
    return need


def build(work: Path, deb: Path) -> Path:
    """The image as an OCI archive for `ctr images import`."""
    rootfs = work / "rootfs"
    d.build_rootfs(str(rootfs))  # busybox: /bin/sh and the applets
    for link in ("lib", "lib64", "sbin"):  # merged /usr, as on the machine (and in bookworm-slim)
        if os.path.islink(f"/{link}") and not os.path.lexists(rootfs / link):
            target = os.readlink(f"/{link}")
            (rootfs / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            os.symlink(target, rootfs / link)
    for pkg in packages(deb):
        for f in d.run(["dpkg-query", "-L", pkg]).stdout.splitlines():
            if f.startswith("/") and not f.startswith(SKIP_DIRS) and not f.startswith(("/bin/", "/sbin/")):
                _copy(f, rootfs)
    # as dpkg unpacks on a merged-/usr system: the package's /lib/systemd goes through the /lib symlink
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(rootfs)], stdin=tar.stdout, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")
    for _ in range(3):  # the libraries of the libraries
        missing = _missing_libraries(rootfs)
        if not missing:
            break
        for lib in missing:
            _copy(os.path.realpath(lib), rootfs)
            if os.path.islink(lib):
                _copy(lib, rootfs)
    (rootfs / "var/lib/verdictd").mkdir(parents=True, exist_ok=True)
    (rootfs / "run/verdictd").mkdir(parents=True, exist_ok=True)
    lay = str(work / "oci")
    d.run(["umoci", "init", "--layout", lay])
    d.run(["umoci", "new", "--image", f"{lay}:node-installer"])
    d.run(["umoci", "insert", "--image", f"{lay}:node-installer", str(rootfs), "/"], timeout=600)
    d.run(["umoci", "config", "--image", f"{lay}:node-installer", "--config.cmd", "/bin/sh", "--config.env",
           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--config.workingdir", "/",
           "--architecture", "amd64", "--os", "linux"])
    archive = work / "node-installer-oci.tar"
    d.run(["skopeo", "copy", "-q", f"oci:{lay}:node-installer", f"oci-archive:{archive}:{REF}"], timeout=600)
    shutil.rmtree(rootfs)
    shutil.rmtree(lay)
    return archive
