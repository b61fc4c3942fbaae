"""The forget ledger's keyed digests of patients, shared by the operator and the trainer (torch-free).

A model's ledger (``<registry>/<name>/ledger/``) names the patients of every promoted erasure only as
``HMAC-SHA256(ledger key, subject ID)`` in hex: never a raw ID, never an unkeyed hash (patient IDs are
few and guessable, so a plain hash could be reversed by trying them all). The operator gives a run
the digests of every earlier erasure of its model (:class:`~forgetmi_trainer.contract.config.LedgerDigests`);
the trainer digests each manifest subject with the same key and leaves the matches out of the retain
set (and so out of a retrain's training set).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

DIGEST_PATTERN = r"^[0-9a-f]{64}$"
_DIGEST = re.compile(DIGEST_PATTERN)


def subject_digest(key: bytes, subject_id: str) -> str:
    """The ledger digest of one subject: hex HMAC-SHA256 of its UTF-8 ID under ``key``."""
    if not key:
        raise ValueError("The ledger key is empty.")
    return hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()


def digests_text(digests: Iterable[str]) -> str:
    """The canonical digest list: sorted, de-duplicated, one per line (ends with a newline when not empty)."""
    unique = sorted(set(digests))
    for d in unique:
        if not _DIGEST.match(d):
            raise ValueError("A ledger digest is not 64 lowercase hex characters.")
    return "".join(f"{d}\n" for d in unique)


def parse_digests(text: str) -> frozenset[str]:
    """The digests of a canonical list (blank lines ignored); a line that is not a digest is an error
    (its content is not repeated: it could be a patient ID written by mistake)."""
    found = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not _DIGEST.match(line):
            raise ValueError(f"line {number} of the ledger digests is not a 64-character lowercase hex digest")
        found.add(line)
    return frozenset(found)
