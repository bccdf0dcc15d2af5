"""The enclave conversion at Create: an ordinary image becomes a signed `sim` enclave container.

A container asks for it with `ENCLAVE_TYPE=sim` in process.env or the `enclave.type=sim` annotation (read as rune
reads them, inclavare.enclave.config). Then, before `rune create`:
  - an image that carries its own signature (ROOTFS/.inclavare/enclave/manifest.json, from `sgx-tools sign-image`
    or `sign-bundle`) is launched as signed: nothing to do;
  - with `signature_method = "client"` an unsigned image is refused (the owner signs off the node);
  - otherwise the rootfs is measured and signed (convert_worker.py, in its own interpreter: the measurement and the
    RSA signature need `cryptography`, which would stay resident in the pod's shim) with the local key or through a
    rune-signing-server, and the manifest and SIGSTRUCT are written into the container's rootfs; config.json gets the
    enclave annotations. rune's launch check at create then verifies what was signed.
A PAL enclave (ENCLAVE_RUNTIME_PATH set) and intelSgx containers are passed to rune unchanged: their enclave runtime
does its own measurement.

The cache (cache.py) skips the measurement and the signature when the same rootfs, the same inputs and the same
signer were converted before; a changed file still fails rune's launch check, which always measures.
"""

from __future__ import annotations

import os
import sys
import time

from inclavare.enclave import config as enclave_config
from inclavare.errors import RuneError
from inclavare.oci import jsonlite
from inclavare.shim import api

ENCLAVE_DIR = (".inclavare", "enclave")  # inside the rootfs
MANIFEST = "manifest.json"
SIGSTRUCT = "sigstruct.bin"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WORKER_TIMEOUT = 600.0


def enclave_dir(rootfs: str, create: bool) -> int | None:
    """An fd of ROOTFS/.inclavare/enclave, opened component by component without following a symlink (the image is
    not trusted: a /.inclavare that points elsewhere must not make the shim read or write outside the rootfs);
    None when it does not exist and create is False. RuneError for a component that is not a directory."""
    fd = os.open(rootfs, _DIR_FLAGS)
    try:
        for name in ENCLAVE_DIR:
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o755, dir_fd=fd)
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except (NotADirectoryError, OSError) as e:
                if isinstance(e, NotADirectoryError) or e.errno == 40:  # ENOTDIR, ELOOP: a file or a symlink
                    raise RuneError(f"the image's /{'/'.join(ENCLAVE_DIR)} is a symlink or not a directory; an enclave "
                                    "image keeps its signature in a directory of its own") from None
                raise
            os.close(fd)
            fd = nxt
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def read_signature(rootfs: str) -> tuple[bytes, bytes] | None:
    """(manifest.json, sigstruct.bin) of a signed image, None when it has none."""
    d = enclave_dir(rootfs, create=False)
    if d is None:
        return None
    try:
        out = []
        for name in (MANIFEST, SIGSTRUCT):
            try:
                f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            except FileNotFoundError:
                return None
            try:
                out.append(os.read(f, 1 << 24))
            finally:
                os.close(f)
        return out[0], out[1]
    finally:
        os.close(d)


def write_signature(rootfs: str, manifest: bytes, sigstruct: bytes) -> None:
    d = enclave_dir(rootfs, create=True)
    try:
        for name, data in ((SIGSTRUCT, sigstruct), (MANIFEST, manifest)):
            tmp = f".{name}.tmp{os.getpid()}"
            f = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=d)
            try:
                os.write(f, data)
                os.fsync(f)
            finally:
                os.close(f)
            os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
    finally:
        os.close(d)  # type: ignore[arg-type]


def wants_enclave(spec: dict) -> bool:
    return bool(enclave_config.read(spec)["type"])


def _rootfs(bundle: str, spec: dict) -> str:
    path = str((spec.get("root") or {}).get("path") or "rootfs")
    return path if os.path.isabs(path) else os.path.join(bundle, path)


def signer(cfg) -> dict:  # noqa: ANN001 - config.Config
    """How to sign: through the signing server when one is configured, else with the local key file."""
    address = cfg.text("signature", "server_address")
    if address:
        return {"type": "server", "address": address}
    path = cfg.text("signature", "private_key")
    try:
        st = os.stat(path)
    except OSError as e:
        raise RuneError(f"the enclave signing key {path} ([signature] private_key in {cfg.path}) cannot be read: "
                        f"{e.strerror}; create it with 'sgx-tools gen-key' or set [signature] server_address") from None
    return {"type": "key", "path": path, "id": f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"}


def convert(bundle: str, spec: dict, cfg, log, spawn, mounts: list[api.Mount] | None = None) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    ec = enclave_config.detect(spec)  # an unknown type or a bad setting: rune's own sentence, before anything runs
    if ec is None or ec.type != enclave_config.SIM or ec.runtime_path:
        return
    rootfs = _rootfs(bundle, spec)
    if read_signature(rootfs) is not None:
        log(f"{os.path.basename(bundle)}: the image carries its own enclave signature", "info")
        return
    if cfg.signature_method == "client":
        raise RuneError(f"the image is not a signed enclave image and {cfg.path} sets signature_method = \"client\" "
                        f"(the shim does not sign): sign the image with 'sgx-tools sign-image' or use \"server\"")
    from inclavare.shim import cache

    how = signer(cfg)
    debug = bool(cfg.get("signature", "debug"))
    key = cache.key(rootfs, spec, mounts or [], how, debug)
    store = cache.Cache(cfg.text("cache", "dir"), int(cfg.get("cache", "max_entries")))  # type: ignore[arg-type]
    hit = store.get(key)
    if hit is None:
        result = run_worker(spawn, {"bundle": bundle, "rootfs": rootfs, "signer": how, "debug": debug})
        signature = read_signature(rootfs)
        if signature is None:
            raise RuneError("the enclave signing worker wrote no signature into the rootfs")
        manifest, sigstruct = signature
        store.put(key, manifest, sigstruct, result)
        annotate(bundle, spec, result)
        log(f"{os.path.basename(bundle)}: signed enclave MRENCLAVE {result['mr_enclave']} MRSIGNER "
            f"{result['mr_signer']} (converted in {(time.monotonic() - t0) * 1000:.1f} ms)", "info")
        return
    manifest, sigstruct, meta = hit
    install(bundle, spec, rootfs, manifest, sigstruct, meta)
    log(f"{os.path.basename(bundle)}: enclave signature from the cache (MRENCLAVE {meta['mr_enclave']} MRSIGNER "
        f"{meta['mr_signer']}, converted in {(time.monotonic() - t0) * 1000:.1f} ms)", "info")


def install(bundle: str, spec: dict, rootfs: str, manifest: bytes, sigstruct: bytes, meta: dict) -> None:
    """Write a cached signature into the rootfs and the enclave annotations into config.json."""
    write_signature(rootfs, manifest, sigstruct)
    annotate(bundle, spec, meta)


def annotate(bundle: str, spec: dict, meta: dict) -> None:
    """config.json: the enclave annotations (enclave.type=sim, MRENCLAVE and MRSIGNER, informational)."""
    annotations = dict(spec.get("annotations") or {})
    annotations.update({"enclave.type": "sim", "enclave.sim.mrenclave": meta["mr_enclave"],
                        "enclave.sim.mrsigner": meta["mr_signer"]})
    spec["annotations"] = annotations
    process = spec.get("process") or {}
    if process.get("env"):
        process["env"] = ["ENCLAVE_TYPE=sim" if e.startswith("ENCLAVE_TYPE=") else e for e in process["env"]]
    _atomic(os.path.join(bundle, "config.json"), jsonlite.dumps(spec).encode())


def _atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def run_worker(spawn, request: dict) -> dict:  # noqa: ANN001 - Reaper.spawn
    """Measure and sign in a fresh interpreter (convert_worker.main); its answer, or RuneError with its sentence."""
    pkg = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {pkg!r}); from inclavare.shim.convert_worker import main; "
            "sys.exit(main())")
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        cmd = spawn([sys.executable, "-I", "-S", "-c", code], (in_r, out_w, out_w))
    finally:
        os.close(in_r)
        os.close(out_w)
    try:
        os.write(in_w, jsonlite.dumps(request).encode())
    except OSError:
        pass
    finally:
        os.close(in_w)
    chunks = []
    while chunk := os.read(out_r, 65536):
        chunks.append(chunk)
    os.close(out_r)
    status = cmd.wait(WORKER_TIMEOUT)
    text = b"".join(chunks).decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else ""
    try:
        answer = jsonlite.loads(last) if last.startswith("{") else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        raise RuneError(str(answer["error"]))
    if status or not isinstance(answer, dict):
        raise RuneError(f"the enclave signing worker failed (exit status {status}): {text[-500:]}")
    return answer
