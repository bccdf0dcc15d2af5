"""Inclavare Containers in Python: rune, enclave containers, attestation and secret provisioning."""

__version__ = "0.1.0"
