"""OCI images on disk (image-spec): read an image from an OCI layout, an OCI archive or a `docker save` archive,
unpack its layers into a rootfs (whiteouts applied, owners and modes kept, nothing written outside the rootfs), and
write it back with one more layer, in the same formats. What `sgx-tools sign-image` needs; not on rune's hot path.

References, as skopeo writes them: `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`; a path
without a transport is recognised by its content (a directory with oci-layout, a tar with oci-layout or with
manifest.json).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from inclavare.errors import RuneError

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
TRANSPORTS = ("oci", "oci-archive", "docker-archive")


@dataclass
class Layer:
    path: Path  # the blob (maybe compressed) on disk, in the work directory
    media_type: str = MT_OCI_LAYER
    digest: str = ""  # of the blob, "sha256:..."
    size: int = 0


@dataclass
class Image:
    config: dict
    layers: list[Layer] = field(default_factory=list)
    name: str = ""  # the reference name, when the source had one


def parse_ref(ref: str) -> tuple[str, str, str]:
    """(transport, path, name) of an image reference; transport "" when the path has none."""
    transport, sep, rest = ref.partition(":")
    if sep and transport in TRANSPORTS:
        path, _, name = rest.partition(":")
        return transport, path, name
    if sep and transport and "/" not in transport and not os.path.exists(ref):
        return transport, rest, ""  # another transport (docker://, containers-storage:...): for skopeo
    return "", ref, ""


def detect(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "oci-layout").exists():
            return "oci"
        raise RuneError(f"the directory {path} is not an OCI layout (it has no oci-layout file)")
    try:
        with tarfile.open(path) as t:
            names = set(t.getnames())
    except (OSError, tarfile.TarError) as e:
        raise RuneError(f"the image {path} cannot be read as an image archive: {e}") from None
    if "oci-layout" in names or "./oci-layout" in names:
        return "oci-archive"
    if "manifest.json" in names or "./manifest.json" in names:
        return "docker-archive"
    raise RuneError(f"the archive {path} is neither an OCI archive (oci-layout) nor a docker save archive "
                    "(manifest.json)")


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise RuneError(f"the image's {what} {path.name} cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise RuneError(f"the image's {what} {path.name} is not valid JSON: {e}") from None


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
        raise RuneError(f"the image refers to a blob by the digest {digest!r}, which is not sha256:<64 hex>")
    return layout / "blobs" / "sha256" / hexd


def read_layout(layout: Path, name: str = "") -> Image:
    index = _read_json(layout / "index.json", "index")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise RuneError(f"the OCI layout {layout} has no image in its index.json")
    chosen = [m for m in manifests if (m.get("annotations") or {}).get(REF_ANNOTATION) in (name, None)] if name else []
    if name and not chosen:
        chosen = [m for m in manifests if (m.get("annotations") or {}).get(REF_ANNOTATION, "").endswith(":" + name)]
        if not chosen:
            raise RuneError(f"the OCI layout {layout} has no image named {name!r}")
    desc = (chosen or manifests)[0]
    man = _read_json(_blob(layout, desc["digest"]), "manifest")
    if isinstance(man, dict) and man.get("manifests"):  # an image index: take the linux/amd64 entry, or the first
        entries = man["manifests"]
        desc = next((m for m in entries if (m.get("platform") or {}).get("architecture") in ("amd64", None)), entries[0])
        man = _read_json(_blob(layout, desc["digest"]), "manifest")
    if not isinstance(man, dict) or "config" not in man:
        raise RuneError(f"the image manifest in {layout} has no config")
    config = _read_json(_blob(layout, man["config"]["digest"]), "config")
    layers = [Layer(_blob(layout, d["digest"]), d.get("mediaType", MT_OCI_LAYER), d["digest"], d.get("size", 0))
              for d in man.get("layers") or ()]
    ref = (desc.get("annotations") or {}).get(REF_ANNOTATION, "")
    return Image(config if isinstance(config, dict) else {}, layers, ref)


def read_docker_archive(root: Path, name: str = "") -> Image:
    entries = _read_json(root / "manifest.json", "manifest")
    if not isinstance(entries, list) or not entries:
        raise RuneError("the docker archive's manifest.json lists no image")
    entry = entries[0]
    if name:
        entry = next((e for e in entries if name in (e.get("RepoTags") or ())), None)
        if entry is None:
            raise RuneError(f"the docker archive has no image tagged {name!r}")
    config = _read_json(_inside(root, entry["Config"]), "config")
    layers = [Layer(_inside(root, p)) for p in entry.get("Layers") or ()]
    tags = entry.get("RepoTags") or [""]
    return Image(config if isinstance(config, dict) else {}, layers, tags[0])


def _inside(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if not str(p).startswith(str(root.resolve()) + "/"):
        raise RuneError(f"the image archive names {rel!r}, which is outside the archive")
    return p


def _untar(archive: str, dest: Path) -> None:
    try:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise RuneError(f"the image archive {archive} cannot be unpacked: {e}") from None


def read(ref: str, work: Path) -> tuple[Image, str]:
    """The image `ref` names, its files under `work`; and the transport it came from."""
    transport, path, name = parse_ref(ref)
    if transport not in ("",) + TRANSPORTS:
        layout = work / "skopeo-src"
        _skopeo(ref, f"oci:{layout}:image")
        return read_layout(layout), "oci"
    if not transport:
        if not os.path.exists(path):
            raise RuneError(f"the image {path} does not exist")
        transport = detect(path)
    if transport == "oci":
        return read_layout(Path(path), name), transport
    unpacked = work / "archive"
    _untar(path, unpacked)
    if transport == "oci-archive":
        return read_layout(unpacked, name), transport
    return read_docker_archive(unpacked, name), transport


def _skopeo(src: str, dest: str) -> None:
    import subprocess

    if not shutil.which("skopeo"):
        raise RuneError(f"the image reference {src if ':' in src else dest} needs skopeo for its transport; install "
                        "skopeo, or give an OCI layout, an OCI archive or a docker save archive")
    p = subprocess.run(["skopeo", "copy", "-q", src, dest], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuneError(f"skopeo copy {src} {dest} failed: {(p.stderr or p.stdout).strip()}")


# ---- layers -----------------------------------------------------------------------------------------------------


def unpack(img: Image, rootfs: Path) -> None:
    """Apply the layers in order into `rootfs` (created), as a container engine does."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in img.layers:
        try:
            with tarfile.open(layer.path, "r:*") as t:
                for m in t:
                    _apply(t, m, rootfs)
        except tarfile.ReadError as e:
            raise RuneError(f"the layer {layer.digest or layer.path.name} cannot be read ({e}); only tar and "
                            "gzip layers are supported") from None


def _apply(t: tarfile.TarFile, m: tarfile.TarInfo, rootfs: Path) -> None:
    from inclavare.tee.sim.image import resolve_in_rootfs

    rel = os.path.normpath("/" + m.name).lstrip("/")
    if not rel or rel == ".":
        return
    parent_rel, base = os.path.split(rel)
    parent = resolve_in_rootfs(rootfs, "/" + parent_rel)  # never outside the rootfs, whatever the symlinks say
    parent.mkdir(parents=True, exist_ok=True)
    if base == ".wh..wh..opq":
        for child in parent.iterdir():
            _remove(child)
        return
    if base.startswith(".wh."):
        target = parent / base[4:]
        if os.path.lexists(target):
            _remove(target)
        return
    target = parent / base
    if os.path.lexists(target) and not (m.isdir() and target.is_dir() and not target.is_symlink()):
        _remove(target)
    if m.isdir():
        target.mkdir(exist_ok=True)
    elif m.isreg():
        src = t.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    elif m.issym():
        os.symlink(m.linkname, target)
    elif m.islnk():
        src_rel = os.path.normpath("/" + m.linkname)
        os.link(resolve_in_rootfs(rootfs, os.path.dirname(src_rel)) / os.path.basename(src_rel), target)
        return  # the link shares the source's owner and mode
    elif m.isfifo():
        os.mkfifo(target)
    elif m.ischr() or m.isblk():
        os.mknod(target, (stat.S_IFCHR if m.ischr() else stat.S_IFBLK) | 0o600, os.makedev(m.devmajor, m.devminor))
    else:
        return
    os.lchown(target, m.uid, m.gid)
    if not m.issym():
        os.chmod(target, m.mode)
        os.utime(target, (m.mtime, m.mtime))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def layer_of(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed, reproducible layer tar holding `files` ({path: (content, mode)}) and their directories,
    owned by root, dated 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs: list[str] = []
        for path in sorted(files):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.append(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    t.addfile(info)
            data, mode = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---- writing ----------------------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put(layout: Path, data: bytes) -> str:
    digest = _sha(data)
    p = _blob(layout, digest)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return digest


def write(img: Image, transport: str, dest: str, name: str) -> None:
    """Write `img` to `dest` (transport "oci", "oci-archive" or "docker-archive"; another one through skopeo)."""
    if transport not in TRANSPORTS:
        with tempfile.TemporaryDirectory(prefix="sign-image-") as tmp:
            _write_layout(img, Path(tmp) / "oci", name)
            _skopeo(f"oci:{Path(tmp) / 'oci'}:{name or 'image'}", f"{transport}:{dest}")
        return
    if transport == "oci":
        _write_layout(img, Path(dest), name)
        return
    with tempfile.TemporaryDirectory(prefix="sign-image-", dir=os.path.dirname(os.path.abspath(dest))) as tmp:
        root = Path(tmp) / "root"
        if transport == "oci-archive":
            _write_layout(img, root, name)
        else:
            _write_docker(img, root, name)
        part = Path(tmp) / "image.tar"
        with tarfile.open(part, "w") as t:
            for p in sorted(root.rglob("*")):
                t.add(p, arcname=str(p.relative_to(root)), recursive=False)
        os.replace(part, dest)


def _write_layout(img: Image, layout: Path, name: str) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descs = []
    for layer in img.layers:
        data = layer.path.read_bytes()
        digest = _put(layout, data)
        mt = layer.media_type
        if mt.startswith("application/vnd.docker.image.rootfs"):
            mt = MT_OCI_LAYER + ("+gzip" if data[:2] == b"\x1f\x8b" else "")
        elif mt == MT_OCI_LAYER and data[:2] == b"\x1f\x8b":
            mt = MT_OCI_LAYER + "+gzip"
        descs.append({"mediaType": mt, "digest": digest, "size": len(data)})
    cfg = json.dumps(img.config, separators=(",", ":")).encode()
    cdigest = _put(layout, cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                      "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(cfg)},
                      "layers": descs}, separators=(",", ":")).encode()
    mdigest = _put(layout, man)
    entry: dict = {"mediaType": MT_OCI_MANIFEST, "digest": mdigest, "size": len(man)}
    if name:
        entry["annotations"] = {REF_ANNOTATION: name}
    index_path = layout / "index.json"
    index = _read_json(index_path, "index") if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    keep = [m for m in index.get("manifests") or () if not name or (m.get("annotations") or {}).get(REF_ANNOTATION) != name]
    index_path.write_text(json.dumps({"schemaVersion": 2, "manifests": [*keep, entry]}))


def _write_docker(img: Image, root: Path, name: str) -> None:
    root.mkdir(parents=True)
    paths = []
    for layer in img.layers:
        data = layer.path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            import gzip

            data = gzip.decompress(data)
        hexd = hashlib.sha256(data).hexdigest()
        (root / hexd).mkdir(exist_ok=True)
        (root / hexd / "layer.tar").write_bytes(data)
        paths.append(f"{hexd}/layer.tar")
    cfg = json.dumps(img.config, separators=(",", ":")).encode()
    chex = hashlib.sha256(cfg).hexdigest()
    (root / f"{chex}.json").write_bytes(cfg)
    (root / "manifest.json").write_text(json.dumps([{"Config": f"{chex}.json", "RepoTags": [name] if name else [],
                                                     "Layers": paths}]))


def add_layer(img: Image, data: bytes, work: Path, created_by: str) -> None:
    """Append an uncompressed layer to the image and record it in the config (diff_ids, history)."""
    path = work / f"layer-{len(img.layers)}.tar"
    path.write_bytes(data)
    digest = _sha(data)
    img.layers.append(Layer(path, MT_OCI_LAYER, digest, len(data)))
    rootfs = img.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", []).append(digest)
    img.config.setdefault("history", []).append({"created_by": created_by, "comment": "inclavare sim enclave"})
