"""`sim`: a software TEE with SGX's formats and rules, and software protection only. SIMULATED, not SGX hardware.

- platform: the per-host identity (simulated root CA, PCK-like certificate, quoting key, platform secret)
- image:    the signed enclave manifest: what a sim enclave measures, and the rootfs checks
- manifest: the signing model as a library (build a manifest, sign it with a key or an external signer, write it)
- launch:   EINIT's rules (`launch_check`), the host launch policy, the process against the manifest
- ereport:  local reports (AES-128-CMAC with a per-platform key), EGETKEY-like key derivation (`egetkey`)
- qe:       the simulated quoting enclave: TARGETINFO, quote v3 generation and verification against the sim root
- evidence: what a launched enclave's runelet keeps to make reports and quotes with libcrypto alone
- bundle, image_signing: `sgx-tools sign-bundle` (an OCI bundle) and `sgx-tools sign-image` (a container image)

The runtime calls `inclavare.tee.sim.launch.launch_check(rootfs, ...)` at create (re-exported here, imported on first
use so that the package's light modules - envpolicy, evidence - cost nothing more).
"""

__all__ = ["LaunchPolicy", "LaunchedEnclave", "launch_check"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from inclavare.tee.sim import launch

        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
