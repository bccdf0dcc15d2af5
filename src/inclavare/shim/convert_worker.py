"""The measurement and signature of a conversion, in an interpreter of its own (started by convert.run_worker): the
request on stdin as JSON {bundle, rootfs, signer, debug}, the answer on stdout as one JSON line
{mr_enclave, mr_signer} or {error: sentence}.

Signing model: the enclave manifest of inclavare.tee.sim.manifest (the enclave-images model). The manifest is built
from the container's process (manifest.from_process): its argv[0] is the entry point (arguments free), its
environment the measured defaults, minus the names the engine sets per container (image.UNTRUSTED_ENV: HOSTNAME,
TERM, HOME, container), which stay allowed as untrusted; the container's mount destinations are untrusted paths
besides the engine-managed ones. So the signed manifest holds the image's files and the image's process, not what
containerd injects, and the next pod of the same image gets the same manifest (and the cache's signature).
The signer is the local key (manifest.key_signer), or the signing server (manifest.callback_signer over its public
key; the manifest library verifies the signature it answers before using it).
"""

from __future__ import annotations

import json
import posixpath
import sys
from pathlib import Path

from inclavare.errors import RuneError

MODEL = "sim-manifest-2"


def mount_destinations(spec: dict) -> list[str]:
    out = []
    for m in spec.get("mounts") or ():
        dest = str((m or {}).get("destination", "")) if isinstance(m, dict) else ""
        if dest:
            d = posixpath.normpath("/" + dest.lstrip("/"))
            if d != "/":
                out.append(d)
    return sorted(set(out))


def process_for_signing(process: dict) -> dict:
    """process with the engine's per-container variables left out of the measured defaults."""
    from inclavare.tee.sim import envpolicy, image

    env = [e for e in process.get("env") or () if isinstance(e, str)
           and not envpolicy.allowed(e.partition("=")[0], image.UNTRUSTED_ENV)]
    return dict(process, env=env)


def signer_for(how: dict):  # noqa: ANN201 - manifest.Signer
    from inclavare.tee.sim import manifest

    if how["type"] == "key":
        return manifest.key_signer(how["path"])
    from inclavare.shim.signing_client import SigningClient

    client = SigningClient(how["address"])
    pem = client.public_key()

    def sign_pkcs1(data: bytes) -> bytes:
        signature, _public = client.sign(data)
        return signature

    try:
        return manifest.callback_signer(pem, sign_pkcs1)
    except RuneError as e:
        raise RuneError(f"the signing server {how['address']}: {e}") from None


def sign(req: dict) -> dict:
    from inclavare.tee.sim import manifest

    bdir, rootfs = Path(req["bundle"]), Path(req["rootfs"])
    cfg_path = bdir / "config.json"
    try:
        spec = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise RuneError(f"the bundle config {cfg_path} cannot be read: {e}") from None
    annotations = dict(spec.get("annotations") or {})
    trusted = [p.strip() for p in str(annotations.get("enclave.trusted_files", "")).split(",") if p.strip()] or None
    config = manifest.from_process(rootfs, process_for_signing(spec.get("process") or {}), trusted_roots=trusted,
                                   untrusted_paths=mount_destinations(spec), debug=bool(req.get("debug")))
    how = req["signer"]
    try:
        signed = manifest.sign(config, signer_for(how))
    except RuneError as e:
        if how["type"] != "server" or str(e).startswith("the signing server"):
            raise
        raise RuneError(f"the signing server {how['address']} answered a signature that is not usable: {e}") from None
    from inclavare.shim.convert import write_signature

    write_signature(str(rootfs), signed.manifest, signed.sigstruct)  # no symlink of the image followed
    return {"mr_enclave": signed.mr_enclave.hex(), "mr_signer": signed.mr_signer.hex(), "model": MODEL}


def main() -> int:
    try:
        out = sign(json.loads(sys.stdin.read()))
    except RuneError as e:
        out = {"error": str(e)}
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        out = {"error": f"the rootfs cannot be measured: {where}{e.strerror or e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
