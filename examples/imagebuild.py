"""Ordinary OCI images of the example services, built from this machine's Debian packages: nothing is pulled from a
registry.

A runtime's root filesystem is the files of its installed Debian packages (`dpkg -L`, with the packages' Depends
and Pre-Depends closure), as a Debian image would hold them; the service's own files are a second layer. The image is
written as a `docker save` archive (for `docker load`) and an OCI archive (for `ctr images import`) by
inclavare.oci.image, reproducibly (owner root, time 0, sorted). Built images are cached under build/examples/NAME-KEY,
KEY a hash of everything the image is made of (package versions, the example's files, this builder), so a later run
reuses them.

    python3 examples/imagebuild.py python-web [--out DIR]     # prints {"docker_archive", "oci_archive", ...} as JSON

Each example directory has an image.json: {"packages": [...], "exclude": [...], "build": [argv run in the example
directory with OUT set, whose OUT/app tree becomes /app], "files": {"/app/x": "x"}, "config": {OCI config}}.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from inclavare.oci import image as oci_image  # noqa: E402

BUILDER_VERSION = "1"
# debconf (and through it perl-base) is only how packages ask questions when installed: not part of a runtime
ALWAYS_EXCLUDED = {"debconf", "perl-base", "dpkg", "init-system-helpers", "adduser", "passwd", "login",
                   "debianutils", "sensible-utils"}
ETC = {"etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
       "etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644)}


def installed() -> dict[str, tuple[str, str]]:
    """{package: (version, Depends + Pre-Depends)} of the installed packages (arch qualifiers dropped)."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\t${Depends}, "
                          "${Pre-Depends}\t${Provides}\n"], capture_output=True, text=True, check=True).stdout
    pkgs: dict[str, tuple[str, str]] = {}
    provides: dict[str, str] = {}
    for line in out.splitlines():
        status, name, version, deps, prov = (line.split("\t") + [""] * 5)[:5]
        if status != "installed":
            continue
        pkgs[name] = (version, deps)
        for p in prov.split(","):
            p = p.strip().split(" ")[0].split(":")[0]
            if p:
                provides.setdefault(p, name)
    for virtual, real in provides.items():
        pkgs.setdefault(virtual, ("virtual:" + real, real))
    return pkgs


def closure(roots: list[str], exclude: set[str]) -> dict[str, str]:
    """{package: version} of roots and what they depend on, first installed alternative of each dependency."""
    pkgs = installed()
    missing = [r for r in roots if r not in pkgs]
    if missing:
        raise SystemExit(f"imagebuild: the Debian package(s) {' '.join(missing)} are not installed "
                         f"(apt-get install {' '.join(missing)})")
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in exclude:
            continue
        version, deps = pkgs[name]
        if version.startswith("virtual:"):
            todo.append(deps)
            continue
        seen[name] = version
        for dep in deps.split(","):
            alts = [re.split(r"[\s(:]", a.strip())[0] for a in dep.split("|") if a.strip()]
            for a in alts:
                if a in pkgs:
                    todo.append(a)
                    break
    return dict(sorted(seen.items()))


def package_files(pkgs: dict[str, str]) -> list[str]:
    files: set[str] = set()
    for name in pkgs:
        out = subprocess.run(["dpkg-query", "-L", name], capture_output=True, text=True, check=True).stdout
        for p in out.splitlines():
            if p.startswith("/") and not p.startswith(("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/",
                                                        "/usr/share/lintian/", "/usr/share/locale/")):
                files.add(p)
    return sorted(files)


def _canonical(path: str) -> str:
    """The path with its directories resolved as on this host (merged /usr: /lib/x -> /usr/lib/x)."""
    parent, base = os.path.split(path)
    return os.path.join(os.path.realpath(parent), base)


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


TOP_LINKS = ("bin", "lib", "lib64", "sbin")


def runtime_layer(dest: Path, files: list[str]) -> None:
    """The packages' files (regular files, symlinks, directories) as one tar, with the host's /usr-merge links."""
    entries: dict[str, str] = {}
    for p in files:
        if os.path.lexists(p) and (os.path.islink(p) or not os.path.isdir(p)):
            c = _canonical(p)
            if c.lstrip("/") not in TOP_LINKS:
                entries[c.lstrip("/")] = c
    dirs = {"tmp": 0o1777, "proc": 0o555, "sys": 0o555, "dev": 0o755, "etc": 0o755, "root": 0o700, "app": 0o755}
    for rel in list(entries):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:i]), 0o755)
    for rel in entries:
        dirs.pop(rel, None)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as t:
        for top in TOP_LINKS:
            if os.path.islink("/" + top):
                info = tarfile.TarInfo(top)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink("/" + top), 0o777
                t.addfile(_normalize(info))
        for rel in sorted(dirs):
            info = tarfile.TarInfo(rel)
            info.type, info.mode = tarfile.DIRTYPE, dirs[rel]
            t.addfile(_normalize(info))
        for rel, host in sorted(entries.items()):
            if os.path.islink(host) or os.path.isfile(host):
                t.add(host, arcname=rel, recursive=False, filter=_normalize)
        for rel, (data, mode) in ETC.items():
            _add_bytes(t, rel, data, mode)


def _add_bytes(t: tarfile.TarFile, rel: str, data: bytes, mode: int) -> None:
    import io

    info = tarfile.TarInfo(rel)
    info.size, info.mode = len(data), mode
    t.addfile(_normalize(info), io.BytesIO(data))


def app_layer(dest: Path, app: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as t:
        for p in sorted(app.rglob("*")):
            rel = "app/" + str(p.relative_to(app))
            t.add(p, arcname=rel, recursive=False, filter=_normalize)


def _hash_tree(h: hashlib._Hash, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")


def _env() -> dict[str, str]:
    """The build's environment: Go's default install directory is on PATH after the caller's."""
    return dict(os.environ, PATH=os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/local/go/bin")


def build(name: str, out_root: Path | None = None) -> dict[str, str]:
    ex = HERE / name
    spec = json.loads((ex / "image.json").read_text())
    exclude = ALWAYS_EXCLUDED | set(spec.get("exclude", []))
    pkgs = closure(spec.get("packages", []), exclude) if spec.get("packages") else {}
    h = hashlib.sha256(BUILDER_VERSION.encode())
    h.update(Path(__file__).read_bytes())
    h.update(json.dumps(pkgs, sort_keys=True).encode())
    _hash_tree(h, ex)
    for tool in spec.get("build_tools", []):  # the compiler's version is part of what the image is made of
        try:
            h.update(subprocess.run(tool, capture_output=True, text=True, check=True, env=_env()).stdout.encode())
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"imagebuild: {name} needs {tool[0]}, which does not run here: {e}") from None
    key = h.hexdigest()[:16]
    out_root = out_root or REPO / "build" / "examples"
    out = out_root / f"{name}-{key}"
    ref = f"docker.io/library/inclavare-{name}:latest"
    result = {"name": name, "ref": ref, "key": key, "dir": str(out), "docker_archive": str(out / "docker.tar"),
              "oci_archive": str(out / "oci.tar"), "packages": " ".join(pkgs)}
    if (out / "done").exists():
        return result
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=out_root) as tmp:
        work = Path(tmp)
        app = work / "app"
        app.mkdir()
        for dst, src in spec.get("files", {}).items():
            target = app / dst.removeprefix("/app/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ex / src, target)
        if spec.get("build"):
            env = dict(_env(), OUT=str(work))
            subprocess.run(spec["build"], cwd=ex, env=env, check=True)
        layers = []
        if pkgs:
            runtime_layer(work / "runtime.tar", package_files(pkgs))
            layers.append(work / "runtime.tar")
        else:
            with tarfile.open(work / "runtime.tar", "w", format=tarfile.PAX_FORMAT) as t:
                for rel, mode in (("tmp", 0o1777), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755)):
                    info = tarfile.TarInfo(rel)
                    info.type, info.mode = tarfile.DIRTYPE, mode
                    t.addfile(_normalize(info))
                for rel, (data, mode) in ETC.items():
                    _add_bytes(t, rel, data, mode)
            layers.append(work / "runtime.tar")
        app_layer(work / "app.tar", app)
        layers.append(work / "app.tar")
        img = oci_image.Image(config={"architecture": "amd64", "os": "linux", "config": spec["config"],
                                      "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
        for i, layer in enumerate(layers):
            data = layer.read_bytes()
            oci_image.add_layer(img, data, work, ["Debian packages: " + " ".join(pkgs), f"examples/{name}"][i])
            layer.unlink()
        img.config["history"] = [{"created_by": c["created_by"]} for c in img.config["history"]]
        stage = work / "out"
        stage.mkdir()
        oci_image.write(img, "docker-archive", str(stage / "docker.tar"), ref)
        oci_image.write(img, "oci-archive", str(stage / "oci.tar"), ref)
        (stage / "image.json").write_text(json.dumps(result | {"packages": pkgs}, indent=1) + "\n")
        (stage / "done").write_text("")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    for old in out_root.glob(f"{name}-*"):  # the builds of earlier versions of this example
        if old != out and (old / "done").exists():
            shutil.rmtree(old, ignore_errors=True)
    return result


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    results = [build(n, a.out) for n in a.names]
    print(json.dumps(results if len(results) > 1 else results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
