"""Remote attestation: evidence verification and appraisal.

- claims:     the result of a verification, one type for every kind of evidence
- collateral: DCAP collateral, from a file in dcap-qvl's JSON layout or fetched from a PCCS / Intel PCS v4 URL
- sgx_dcap:   SGX quotes v3 through dcap-qvl (full collateral checks), with the project's own parser
- tdx:        TDX quotes v4/v5 through dcap-qvl
- sim:        SIMULATED quotes of the inclavare sim TEE, only against a simulated root the caller names
- verifier:   one entry point for all of them (`Verifier.verify(evidence, now=...)`)
- policy:     appraisal in Rego through regopy; every refusal names its rule
- ratls:      attested TLS (TCG DICE tagged evidence, and the Gramine / rats-tls legacy OIDs when verifying)

Nothing here is imported by rune's plain-container hot path. Importing the package makes site-packages visible when
the launcher started Python with -I -S (see inclavare.tee).
"""

import inclavare.tee  # noqa: F401  (site-packages under the -I -S launchers)
