"""`sim`: a software TEE with SGX's formats and rules, and software protection only. SIMULATED, not SGX hardware.

- platform: the per-host identity (simulated root CA, PCK-like certificate, quoting key, platform secret)
- image:    what an enclave image measures, in a fixed order, with the SGX measurement primitive
- launch:   EINIT's rules (`launch_check`), the host launch policy
- ereport:  local reports (AES-128-CMAC with a per-platform key), EGETKEY-like key derivation (`egetkey`)
- qe:       the simulated quoting enclave: TARGETINFO, quote v3 generation and verification against the sim root
- bundle:   `sign_bundle`, OCI bundle -> signed sim enclave bundle

The runtime calls `inclavare.tee.sim.launch.launch_check(rootfs, ...)` at create (re-exported here).
"""

from inclavare.tee.sim.launch import LaunchedEnclave, LaunchPolicy, launch_check

__all__ = ["LaunchPolicy", "LaunchedEnclave", "launch_check"]
