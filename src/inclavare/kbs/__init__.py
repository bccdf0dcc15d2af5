"""verdictd: the verifier and key broker. It releases a secret only to a workload whose evidence verifies
(inclavare.attest) and whose claims the secret's policy accepts.

- config:        `verdictd --config FILE` (TOML)
- store:         secrets and policies, encrypted at rest (AES-256-GCM, a key file), changed atomically
- rcar:          the Confidential Containers KBS protocol (RCAR: /kbs/v0/auth, /attest, /resource/...), HTTP-free
- jwe, token:    JWE-wrapped resources (jwcrypto) and the attestation token (an ES256 JWT)
- http:          the KBS HTTP server: bounded threads, body and time limits
- ratls_service: the same secrets over mutual attested TLS for enclave containers (JSON lines, verdictd's commands)
- admin:         the local admin socket that `verdict` talks to
- audit:         one JSON line per release, refusal and attestation
- daemon:        ties them together; SIGHUP reloads, SIGTERM stops
- client:        a KBS RCAR client and the attested-TLS secrets client the init-runelet uses
"""

import inclavare.tee  # noqa: F401  (site-packages under the -I -S launchers)
