"""`sgx-tools sign-image`: an ordinary container image in, a signed sim enclave image out.

The source's layers are unpacked as an engine unpacks them, the enclave manifest is built from its image config
(inclavare.tee.sim.manifest.from_image_config) and signed, and the destination is the same image with:
  - one more layer holding /.inclavare/enclave/manifest.json and sigstruct.bin, so that `docker load`, `podman load`,
    `ctr image import`, skopeo and any registry carry the signature unchanged;
  - ENCLAVE_TYPE=sim in the config's Env, which every engine passes to the runtime: rune then runs it as a sim
    enclave, launch-checked against the manifest;
  - the labels io.inclavare.enclave.mrenclave and io.inclavare.enclave.mrsigner (informational).
The destination has the source's format unless its reference names another transport.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from inclavare.errors import RuneError
from inclavare.oci import image as oci_image
from inclavare.tee.sim import image, manifest

LABEL_MRENCLAVE = "io.inclavare.enclave.mrenclave"
LABEL_MRSIGNER = "io.inclavare.enclave.mrsigner"


def sign_image(source: str, dest: str, signer: manifest.Signer, *, work_dir: str | None = None,
               **options) -> manifest.SignedEnclave:
    """Sign the image `source` into `dest` (references as inclavare.oci.image.parse_ref); options as
    manifest.build."""
    with tempfile.TemporaryDirectory(prefix="sign-image-", dir=work_dir) as tmp:
        work = Path(tmp)
        img, transport = oci_image.read(source, work)
        rootfs = work / "rootfs"
        oci_image.unpack(img, rootfs)
        signed = manifest.sign(manifest.from_image_config(rootfs, img.config, **options), signer)
        d = image.ENCLAVE_DIR
        layer = oci_image.layer_of({f"{d}/{image.MANIFEST}": (signed.manifest, 0o644),
                                    f"{d}/{image.SIGSTRUCT}": (signed.sigstruct, 0o644)})
        cfg = img.config.setdefault("config", {})
        cfg["Env"] = [e for e in cfg.get("Env") or () if not e.startswith("ENCLAVE_TYPE=")] + ["ENCLAVE_TYPE=sim"]
        labels = cfg.get("Labels") or {}
        labels.update({LABEL_MRENCLAVE: signed.mr_enclave.hex(), LABEL_MRSIGNER: signed.mr_signer.hex()})
        cfg["Labels"] = labels
        oci_image.add_layer(img, layer, work, "sgx-tools sign-image: /.inclavare/enclave (manifest, SIGSTRUCT)")
        d_transport, d_path, d_name = oci_image.parse_ref(dest)
        if not d_path:
            raise RuneError(f"the destination {dest!r} names no path")
        oci_image.write(img, d_transport or transport, d_path, d_name or img.name)
        return signed
