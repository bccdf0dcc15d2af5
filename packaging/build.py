#!/usr/bin/env python3
"""make deb / make rpm: the inclavare-containers package, built from this checkout into build/packages/.

What it holds (one staging tree for both formats, build/packages/root):
- /usr/lib/inclavare-containers/venv: a private Python environment made with the system's python3.11 (-m venv),
  with this package and the dependencies of every optional feature but `test` and `fuzz` (pyproject.toml);
- /usr/bin/<launcher> for each command of inclavare.launcher.LAUNCHERS (rune, sgx-tools, containerd-shim-rune-v2,
  rune-signing-server, rune-device-plugin, verdictd, verdict, epm), started as the checkout's
  are (-I -S, the environment's site-packages put on sys.path by the launcher itself);
- systemd units: rune-device-plugin.service, verdictd.service (its runtime, state and log directories
  /run/verdictd, /var/lib/verdictd, /var/log/verdictd made by systemd) and epm.service;
- /etc/inclavare-containers/config.toml, the shim's default configuration, /etc/verdictd/verdictd.toml, verdictd's,
  and /etc/epm/config.toml, epm's (conffiles: CONFIGS, each a file a unit's ExecStart names);
- docs under /usr/share/doc/inclavare-containers.
The maintainer scripts (packaging/deb) make the enclave signing key on first install and remove the environment (and,
on purge, /etc/inclavare-containers, /var/lib/inclavare-containers, verdictd's /etc/verdictd with its key,
/var/lib/verdictd with its records and /var/log/verdictd, and epm's /etc/epm and /var/lib/epm) so that nothing is left. `dpkg -r` keeps the
configuration and verdictd's records and audit log, as Debian keeps a package's data until purge.

    python3 packaging/build.py deb|rpm

`make install` (python3 packaging/build.py install PREFIX [DESTDIR]) makes the same environment (with the system's
python3, or $INSTALL_PYTHON) under PREFIX/lib/inclavare-containers and the launchers in PREFIX/bin; INSTALL_EXTRAS=a,b picks the
extras (default: those of the packages; empty: rune and sgx-tools' standard-library-only core).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from inclavare import __version__  # noqa: E402
from inclavare.launcher import LAUNCHERS, TEMPLATE  # noqa: E402

NAME = "inclavare-containers"
PY = "python3.11"
LIB = f"/usr/lib/{NAME}"
VENV = f"{LIB}/venv"
SITE = f"{VENV}/lib/{PY}/site-packages"
OUT = REPO / "build" / "packages"
ROOT = OUT / "root"
VERDICTD_CONFIG = "/etc/verdictd/verdictd.toml"
EPM_CONFIG = "/etc/epm/config.toml"
# installed path -> (the file in this checkout, the command it configures: shipped only with that command's launcher)
CONFIGS = {f"/etc/{NAME}/config.toml": ("packaging/config.toml", "containerd-shim-rune-v2"),
           VERDICTD_CONFIG: ("packaging/verdictd.toml", "verdictd"), EPM_CONFIG: ("packaging/epm.toml", "epm")}
UNITS = {"rune-device-plugin.service": "rune-device-plugin", "verdictd.service": "verdictd", "epm.service": "epm"}
DOCS = ("README.md", "docs/kubernetes.md", "docs/enclave-containers.md", "docs/shim.md", "docs/attestation.md")
SUMMARY = "Confidential-computing container runtime: rune, containerd-shim-rune-v2, device plugin, key broker"


def run(*cmd: str, **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


def extras() -> list[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return sorted(e for e in meta.get("optional-dependencies", {}) if e not in ("test", "fuzz"))


def private_env(python: str, venv: Path, extra: list[str]) -> str:
    """A Python environment at venv (made with python -m venv) holding a non-editable copy of this package (built
    from the checkout as a wheel) and the dependencies of the given extras; nothing in it names the checkout.
    Returns its site-packages directory, relative to venv."""
    run(python, "-m", "venv", str(venv))
    vpy = str(venv / "bin" / "python3")
    py = subprocess.check_output([vpy, "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
                                 text=True).strip()
    with tempfile.TemporaryDirectory() as wheels:
        # the wheel is built by the running interpreter's setuptools (no download); the dependencies come from the index
        wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
                     wheels, str(REPO)]
        if subprocess.run([*wheel_cmd, "--no-build-isolation"], stderr=subprocess.DEVNULL).returncode != 0:
            run(*wheel_cmd)  # no setuptools (or no wheel support) here: pip fetches them for the build
        wheel = next(Path(wheels).glob("*.whl"))
        spec = f"{wheel}[{','.join(extra)}]" if extra else str(wheel)
        # a PYTHONPATH naming a checkout's src/ (where a build leaves inclavare.egg-info) makes pip take the package
        # as installed already and leave it out of the environment: pip runs without it
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")}
        run(vpy, "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check", spec, env=clean)
    # the environment is run, never managed: no pip, no activation scripts, no console scripts naming its path
    run(vpy, "-m", "pip", "uninstall", "-q", "-y", "pip", "setuptools")
    for p in (venv / "bin").iterdir():
        if not p.name.startswith("python"):
            p.unlink()
    for p in venv.rglob("direct_url.json"):  # names the build's checkout
        p.unlink()
    return f"lib/{py}/site-packages"


def write_launchers(bindir: Path, python: str, site: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for cmd, module in LAUNCHERS.items():
        tmp = bindir / f".{cmd}.tmp"
        tmp.write_text(TEMPLATE.format(python=python, path=site, module=module))
        tmp.chmod(0o755)
        os.replace(tmp, bindir / cmd)


def stage() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    python = shutil.which(PY, path="/usr/bin")
    if not python:
        raise SystemExit(f"packaging needs the system's {PY} (/usr/bin/{PY}, with its venv module)")
    venv = ROOT / VENV.lstrip("/")
    private_env(python, venv, extras())
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\nversion = "
                                     f"{subprocess.check_output([python, '-c', 'import platform; print(platform.python_version())'], text=True).strip()}\n")
    write_launchers(ROOT / "usr/bin", f"{VENV}/bin/{PY}", SITE)
    units = ROOT / "lib/systemd/system"
    units.mkdir(parents=True)
    for unit, cmd in UNITS.items():
        if cmd in LAUNCHERS:
            shutil.copy(REPO / "packaging/systemd" / unit, units / unit)
    for dest, (src, cmd) in CONFIGS.items():
        if cmd in LAUNCHERS:
            (ROOT / dest.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / src, ROOT / dest.lstrip("/"))
    doc = ROOT / "usr/share/doc" / NAME
    doc.mkdir(parents=True)
    for f in DOCS:
        if (REPO / f).exists():
            shutil.copy(REPO / f, doc / Path(f).name)
    for p in ROOT.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)


def conffiles() -> list[str]:
    return [dest for dest in CONFIGS if (ROOT / dest.lstrip("/")).exists()]


def deb() -> Path:
    debian = ROOT / "DEBIAN"
    debian.mkdir()
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    (debian / "control").write_text(
        f"Package: {NAME}\nVersion: {__version__}\nArchitecture: amd64\nMaintainer: Inclavare Containers "
        f"maintainers <maintainers@inclavare-containers.invalid>\nInstalled-Size: {size}\n"
        f"Depends: {PY}, libseccomp2\nRecommends: containerd\nSection: admin\nPriority: optional\n"
        f"Description: {SUMMARY}\n rune is an OCI runtime, a drop-in for runc, that also runs enclave containers;\n"
        " containerd-shim-rune-v2 signs and converts images; rune-device-plugin advertises enclave resources to\n"
        " the kubelet. Python dependencies live in a private environment under /usr/lib/inclavare-containers.\n")
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles()))
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(REPO / "packaging/deb" / script, debian / script)
        (debian / script).chmod(0o755)
    out = OUT / f"{NAME}_{__version__}_amd64.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(ROOT), str(out), stdout=subprocess.DEVNULL)
    shutil.rmtree(debian)
    return out


def rpm() -> Path:
    top = OUT / "rpmbuild"
    shutil.rmtree(top, ignore_errors=True)
    for d in ("SPECS", "RPMS", "BUILD", "BUILDROOT"):
        (top / d).mkdir(parents=True)
    files = []
    for p in sorted(ROOT.rglob("*")):
        rel = "/" + str(p.relative_to(ROOT))
        if p.is_dir() and not p.is_symlink():
            if rel.startswith((LIB, f"/etc/{NAME}", "/etc/verdictd", "/etc/epm", f"/usr/share/doc/{NAME}")):
                files.append(f"%dir {rel}")
        elif rel in conffiles():
            files.append(f"%config(noreplace) {rel}")
        else:
            files.append(rel)
    postinst = (REPO / "packaging/deb/postinst").read_text()
    spec = f"""Name: {NAME}
Version: {__version__}
Release: 1
Summary: {SUMMARY}
License: Apache-2.0
BuildArch: x86_64
AutoReqProv: no
Requires: /usr/bin/{PY}
Recommends: containerd
%define __os_install_post %{{nil}}
%define _build_id_links none
%define debug_package %{{nil}}

%description
rune, containerd-shim-rune-v2, sgx-tools and rune-device-plugin with their Python dependencies in a private
environment under {LIB}.

%install
mkdir -p %{{buildroot}}
cp -a {ROOT}/. %{{buildroot}}/

%post
{postinst}
%postun
if [ "$1" = 0 ]; then rm -rf {LIB} /var/lib/{NAME} /run/verdictd /run/epm; fi

%files
{chr(10).join(files)}
"""
    (top / "SPECS" / f"{NAME}.spec").write_text(spec)
    run("rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(top / "SPECS" / f"{NAME}.spec"),
        stdout=subprocess.DEVNULL)
    built = next((top / "RPMS").rglob("*.rpm"))
    out = OUT / built.name
    shutil.move(built, out)
    shutil.rmtree(top)
    return out


def install_python() -> str:
    """The interpreter of `make install`'s environment: $INSTALL_PYTHON; else the system's python3 (3.11 or later,
    with its venv module), since distributions build theirs with PGO and LTO and link libpython statically, and
    every rune command starts faster on it (about 14% less CPU than on a --enable-shared build such as pyenv's,
    bench/rune_vs_runc.py --baseline); else the interpreter running this."""
    chosen = os.environ.get("INSTALL_PYTHON")
    if chosen:
        return chosen
    for minor in range(20, 10, -1):
        candidate = f"/usr/bin/python3.{minor}"
        if os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-I", "-c", "import ensurepip, venv"], stderr=subprocess.DEVNULL).returncode == 0:
            return candidate
    return os.path.realpath(sys.executable)


def install(prefix: str, destdir: str = "") -> Path:
    """make install: the private environment PREFIX/lib/inclavare-containers/venv (this interpreter's version, the
    extras of the packages) and the launchers in PREFIX/bin naming it, so that they keep working when the checkout
    moves or is deleted. A new environment is built beside the old one and swapped in, then the launchers are
    replaced one by one (each atomically), so a command started meanwhile finds a whole environment."""
    prefix = os.path.abspath(prefix)
    lib = Path(destdir + prefix) / "lib" / NAME
    lib.mkdir(parents=True, exist_ok=True)
    new, old, venv = lib / "venv.new", lib / "venv.old", lib / "venv"
    for p in (new, old):
        shutil.rmtree(p, ignore_errors=True)
    wanted = os.environ.get("INSTALL_EXTRAS")
    site = private_env(install_python(), new, extras() if wanted is None else
                       [e for e in wanted.split(",") if e])
    if venv.exists():
        venv.rename(old)
    new.rename(venv)
    shutil.rmtree(old, ignore_errors=True)
    at = f"{prefix}/lib/{NAME}/venv"
    write_launchers(Path(destdir + prefix) / "bin", f"{at}/bin/{Path(site).parts[1]}", f"{at}/{site}")
    return venv


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind == "install" and len(sys.argv) in (3, 4):
        print(install(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else ""))
        return 0
    if kind not in ("deb", "rpm"):
        print("usage: packaging/build.py deb|rpm | install PREFIX [DESTDIR]", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    stage()
    print(deb() if kind == "deb" else rpm())
    return 0


if __name__ == "__main__":
    sys.exit(main())
