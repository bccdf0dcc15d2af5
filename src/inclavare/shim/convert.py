"""Enclave conversion at Create (placeholder until the signing step lands)."""

from __future__ import annotations


def wants_enclave(spec: dict) -> bool:
    return False


def convert(bundle: str, spec: dict, config, log) -> None:  # noqa: ANN001
    raise NotImplementedError
