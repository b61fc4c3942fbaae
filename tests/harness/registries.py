"""Test helper: point a registry alias at a version, hashed and promoted as the operator does it
(with boto3's default identity, as the tests' own)."""

from __future__ import annotations

from forgetmi_operator.registry import aliases
from forgetmi_trainer.storage import DEFAULT


def point(registry: str, name: str, alias: str, version: str, *, expected_token: str | None = None,
          request: aliases.RequestRef | None = None) -> aliases.AliasRecord:
    """Alias ``alias`` of model ``name`` → ``version`` (verified byte by byte first)."""
    verified = aliases.verify_version(DEFAULT, registry, name, version)
    return aliases.promote(DEFAULT, registry, name, alias, version=verified, expected_token=expected_token,
                           request=request)
