"""`rune spec --enclave`: the original's enclave template (cwd and hostname, the enclave.* annotations), for the
`sim` type, which runs on every host; set enclave.type to intelSgx and enclave.runtime.path to a PAL library on SGX
hosts (rune then adds the SGX devices and binds /var/run/aesmd itself)."""

from __future__ import annotations


def enclave_spec(spec: dict) -> dict:
    spec["process"]["cwd"] = "/var/run/rune"
    spec["hostname"] = "rune"
    annotations = spec.setdefault("annotations", {})
    annotations.update({
        "enclave.type": "sim",
        "enclave.runtime.path": "",  # empty: the built-in sim runtime; or the host path of a liberpal-*.so
        "enclave.runtime.args": "debug",
        "enclave.runtime.loglevel": "info",
    })
    return spec
