"""The measurement and signature of a conversion, in an interpreter of its own (started by convert.run_worker): the
request on stdin as JSON {bundle, rootfs, signer, debug}, the answer on stdout as one JSON line
{mr_enclave, mr_signer} or {error: sentence}.

Signing model: today's `sim` enclave images (inclavare.tee.sim.bundle.sign_bundle: the rootfs' files, the entry,
process.args and env measured into MRENCLAVE). The mount destinations of config.json are left out of the trusted tree
(an engine binds its own /etc/hosts, /etc/resolv.conf, /etc/hostname there): a directory holding one is trusted entry
by entry instead of as a whole. The signer is the local key, or the signing server through RemoteKey, which makes
the SIGSTRUCT's RSA signature there and checks it before it is used.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from pathlib import Path

from inclavare.errors import RuneError

MODEL = "sim-sign-bundle-1"


def trusted_roots(rootfs: Path, spec: dict, skip: tuple[str, ...]) -> list[str] | None:
    """The trusted paths when a mount destination falls inside the measured tree; None for the whole rootfs."""
    from inclavare.tee.sim.bundle import walk_tree

    dests = set()
    for m in spec.get("mounts") or ():
        d = posixpath.normpath("/" + str((m or {}).get("destination", "")).lstrip("/"))
        if d != "/" and not any(d == s or d.startswith(s + "/") for s in skip):
            dests.add(d)
    if not dests:
        return None

    def split(rel: str) -> list[str]:
        out: list[str] = []
        host = Path(str(rootfs) + rel)
        try:
            names = sorted(os.listdir(host))
        except OSError:
            return out
        for name in names:
            path = rel.rstrip("/") + "/" + name
            if path in skip or path in dests:
                continue
            full = host / name
            if any(d.startswith(path + "/") for d in dests) and full.is_dir() and not full.is_symlink():
                out += split(path)
            elif walk_tree(rootfs, path)[0]:
                out.append(path)
        return out

    return split("/")


class RemoteKey:
    """The private key as far as SIGSTRUCT signing needs one, held by a signing server."""

    def __init__(self, address: str) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from inclavare.shim.signing_client import SigningClient

        self.client = SigningClient(address)
        pem = self.client.public_key()
        try:
            pub = serialization.load_pem_public_key(pem)
        except ValueError:
            raise RuneError(f"the signing server {address} answered a public key that does not parse") from None
        if not isinstance(pub, rsa.RSAPublicKey):
            raise RuneError(f"the signing server {address} holds a key that is not RSA")
        self.pub = pub
        self.address = address

    def public_key(self):  # noqa: ANN201 - RSAPublicKey
        return self.pub

    def sign(self, data: bytes, pad, algorithm) -> bytes:  # noqa: ANN001
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization

        signature, pem = self.client.sign(data)
        if pem.strip():
            try:
                other = serialization.load_pem_public_key(pem)
            except ValueError:
                other = None
            if other is None or other.public_numbers() != self.pub.public_numbers():
                raise RuneError(f"the signing server {self.address} signed with another key than the one it publishes")
        try:
            self.pub.verify(signature, data, pad, algorithm)
        except InvalidSignature:
            raise RuneError(f"the signing server {self.address} answered a signature that does not verify against "
                            f"its public key") from None
        return signature


def sign(req: dict) -> dict:
    from inclavare.tee.sgx.sigstruct import SigstructError
    from inclavare.tee.sim import bundle

    bdir = Path(req["bundle"])
    rootfs = Path(req["rootfs"])
    try:
        spec = json.loads((bdir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise RuneError(f"the bundle config {bdir / 'config.json'} cannot be read: {e}") from None
    trusted = trusted_roots(rootfs, spec, bundle.SKIP_DIRS)
    signer = req["signer"]
    try:
        if signer["type"] == "server":
            key = RemoteKey(signer["address"])
            signed = bundle.sign_bundle(bdir, "", trusted=trusted, debug=bool(req.get("debug")), key=key)
        else:
            signed = bundle.sign_bundle(bdir, signer["path"], trusted=trusted, debug=bool(req.get("debug")))
    except SigstructError as e:
        where = f"the signing server {signer.get('address')}" if signer["type"] == "server" else signer.get("path")
        raise RuneError(f"{where}: {e}") from None
    return {"mr_enclave": signed.mr_enclave.hex(), "mr_signer": signed.mr_signer.hex(), "model": MODEL}


def main() -> int:
    try:
        req = json.loads(sys.stdin.read())
        out = sign(req)
    except RuneError as e:
        out = {"error": str(e)}
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        out = {"error": f"the rootfs cannot be measured: {where}{e.strerror or e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 1 if "error" in out else 0
