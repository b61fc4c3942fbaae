"""``forgetmi receipt``: check a receipt from storage alone, without trusting the operator's logs.

``forgetmi receipt verify RECEIPT_URI --public-key FILE [--registry URI]`` reads the stored receipt
(file:// or s3://, ``FORGETMI_S3_ENDPOINT_URL`` for another endpoint) and checks, one line each:

- ``signature``: the DSSE envelope verifies with the public key (PEM SubjectPublicKeyInfo), and its
  in-toto Statement's subjects are the predicate's base and candidate digests;
- ``base-model`` and ``candidate-model``: each version directory, re-hashed file by file as the
  operator does (:func:`~forgetmi_operator.registry.aliases.verify_version`, against its
  ``metadata.json``), has the weights' sha256 the receipt states;
- ``report``: the report's bytes hash to the receipt's ``report.sha256``;
- ``alias-history``: the alias record (now or in its history) shows this request moving the alias
  to the candidate (a promotion only; one older than a full history: the version named now descends from it);
- ``ledger``: the model's forget ledger holds the request (a promotion only);
- ``subjects`` (with ``--subjects FILE --hmac-key-file F``): the receipt's HMAC of the subject IDs.

The model's name and registry come from the receipt's own (signed) base model URI
(``<registry>/<name>/versions/<version>``); ``--registry`` reads a copy of the registry elsewhere.
Exit 0 when every check holds, 1 with a ``FAILED`` line per failed check, 2 for bad arguments or a
key that cannot be read. ``forgetmi receipt public-key --signing-key-file F`` prints the PEM public
key of a signing key (what the chart's value ``receipt.signing.publicKey`` publishes).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.lifecycle import receipts, signing
from forgetmi_operator.lifecycle.decisions import Decision
from forgetmi_operator.local import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from forgetmi_operator.registry import aliases, ledger
from forgetmi_operator.registry.paths import alias_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import parse_subjects
from forgetmi_trainer.contract.registry import HISTORY_LIMIT, AliasRecord, parse_alias_record
from forgetmi_trainer.errors import ObjectNotFound, StorageError
from forgetmi_trainer.storage import Objects

SIGNING_KEY_FILE_ENV = "FORGETMI_RECEIPT_SIGNING_KEY_FILE"
SIGNING_KEY_OPTION = "--signing-key-file"
RECEIPT_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` True (holds), False (failed) or None (skipped), with a sentence."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        state = {True: "ok", False: "FAILED", None: "skipped"}[self.ok]
        return f"{state} {self.name}: {self.detail}"


def read_signing_key(path: str) -> bytes:
    """The PEM PKCS#8 Ed25519 key in ``path``; InvalidSpec naming the option when it cannot be used."""
    try:
        pem = Path(path).read_bytes()
    except OSError as err:
        raise InvalidSpec(f"{SIGNING_KEY_OPTION} {path} cannot be read: {err.strerror or err}.") from err
    try:
        signing.load_private_key(pem)
    except signing.SigningError as err:
        raise InvalidSpec(f"{SIGNING_KEY_OPTION} {path}: {err}") from err
    return pem


def _split(uri: str, name: str, version: str) -> str | None:
    """The registry of a version URI ``<registry>/<name>/versions/<version>``, None when it is not one."""
    suffix = f"/{name}/versions/{version}"
    return uri.rstrip("/")[: -len(suffix)] if uri.rstrip("/").endswith(suffix) else None


@dataclass(frozen=True)
class _Where:
    registry: str
    name: str
    origin: str

    def rebase(self, uri: str) -> str:
        """``uri`` in the registry read (``--registry`` replaces the one the receipt names)."""
        return self.registry + uri[len(self.origin):] if uri.startswith(self.origin) else uri


def _where(stored: receipts.StoredReceipt, registry: str | None) -> _Where:
    base = stored.receipt.base
    name = base.uri.rstrip("/").rsplit("/", 3)[-3] if base.uri.count("/") >= 3 else ""
    origin = _split(base.uri, name, base.version)
    if not name or origin is None:
        raise ValueError(f"its base model URI {base.uri} is not <registry>/<name>/versions/{base.version}")
    return _Where(registry=(registry or origin).rstrip("/"), name=name, origin=origin)


def _signature(stored: receipts.StoredReceipt, public_pem: bytes, name: str) -> Check:
    if stored.envelope is None:
        return Check("signature", False, "the receipt is not signed (a plain receipt: the operator had no signing key)")
    try:
        signing.open_envelope(stored.envelope, public_pem)
    except signing.SigningError as err:
        return Check("signature", False, str(err))
    listed = (stored.statement or {}).get("subject") or []
    subjects = [(s.get("name"), (s.get("digest") or {}).get("sha256")) for s in listed if isinstance(s, dict)]
    if subjects != receipts.statement_subjects(stored.receipt, name):
        return Check("signature", False, "the Statement's subjects are not the predicate's base and candidate")
    return Check("signature", True, "the DSSE envelope verifies with the public key")


def _model(objects: Objects, where: _Where, check: str, model: receipts.ModelDigest, complete: bool) -> Check:
    try:
        found = aliases.verify_version(objects, where.registry, where.name, model.version, complete=complete)
    except (aliases.RegistryError, StorageError) as err:
        return Check(check, False, str(err))
    if found.sha256 != model.sha256:
        return Check(check, False, f"version {model.version} has sha256 {found.sha256}, the receipt says "
                                   f"{model.sha256}")
    return Check(check, True, f"version {model.version} re-hashed: sha256 {found.sha256}")


def _report(objects: Objects, where: _Where, report: receipts.ArtifactDigest) -> Check:
    uri = where.rebase(report.uri)
    try:
        found = aliases.digest(objects, uri)
    except StorageError as err:
        return Check("report", False, f"{uri} cannot be read: {err}")
    if found != report.sha256:
        return Check("report", False, f"{uri} has sha256 {found}, the receipt says {report.sha256}")
    return Check("report", True, f"{uri} has sha256 {found}")


def _mover(receipt: receipts.Receipt) -> tuple[str, str]:
    """``(uid, what)`` of the request that moved the alias and is in the ledger: the request, or for one
    of a batch of coalesced requests its batch's leader (docs/coalescing.md)."""
    if receipt.batch is not None:
        return receipt.batch.leader.uid, f"{receipt.batch.leader.uid} (the leader of its batch)"
    return receipt.request.uid, receipt.request.uid


def _alias_history(objects: Objects, where: _Where, receipt: receipts.Receipt) -> Check:
    if receipt.decision != Decision.PROMOTE or receipt.promotion is None:
        return Check("alias-history", None, f"the decision was {receipt.decision.value}, not a promotion")
    (uid, who), alias, candidate = _mover(receipt), receipt.promotion.alias, receipt.candidate
    uri = alias_uri(where.registry, where.name, alias)
    try:
        record = parse_alias_record(objects.read_at_most(uri, aliases.RECORD_MAX_BYTES + 1), uri)
    except (StorageError, ValueError) as err:
        return Check("alias-history", False, f"alias '{alias}' cannot be read: {err}")
    entries = [(record.version, record.sha256, record.request)]
    entries += [(entry.version, entry.sha256, entry.request) for entry in record.history]
    if any(v == candidate.version and s == candidate.sha256 and r is not None and r.uid == uid for v, s, r in entries):
        return Check("alias-history", True, f"alias '{alias}' records request {who} promoting {candidate.version}")
    missing = (f"alias '{alias}' ({uri}) has no record of request {who} promoting version {candidate.version} "
               f"with sha256 {candidate.sha256}")
    if len(record.history) < HISTORY_LIMIT:
        return Check("alias-history", False, missing)
    return _beyond_history(objects, where, record, candidate.version, missing)


def _beyond_history(objects: Objects, where: _Where, record: AliasRecord, candidate: str, missing: str) -> Check:
    """A promotion older than the alias's full history (HISTORY_LIMIT entries): it holds when the
    version the alias names now descends from the candidate (later erasures were made from it)."""
    try:
        chain = aliases.lineage(objects, where.registry, where.name, record.version)
    except (aliases.RegistryError, StorageError) as err:
        return Check("alias-history", False, f"{missing}, and the lineage of version {record.version} cannot be "
                                             f"read: {err}")
    if candidate in chain:
        return Check("alias-history", True, f"the promotion is older than the {HISTORY_LIMIT} moves alias history "
                                            f"keeps, and version {record.version}, which the alias names now, "
                                            f"descends from {candidate} ({chain.index(candidate)} generations)")
    return Check("alias-history", False, f"{missing}; its history is full ({HISTORY_LIMIT} moves), but version "
                                         f"{record.version}, which it names now, does not descend from {candidate}")


def _ledger(objects: Objects, where: _Where, receipt: receipts.Receipt) -> Check:
    if receipt.decision != Decision.PROMOTE:
        return Check("ledger", None, f"the decision was {receipt.decision.value}: nothing is added to the ledger")
    try:
        entries = ledger.read_ledger(objects, where.registry, where.name)
    except (aliases.RegistryError, ValueError, StorageError) as err:
        return Check("ledger", False, f"the ledger of model '{where.name}' cannot be read: {err}")
    uid, who = _mover(receipt)
    if ledger.holds_request(entries, uid):
        return Check("ledger", True, f"the ledger of model '{where.name}' holds request {who}")
    return Check("ledger", False, f"the ledger of model '{where.name}' ({len(entries)} entries) does not hold "
                                  f"request {who}")


def _subjects(receipt: receipts.Receipt, ids: list[str], key: bytes) -> Check:
    found = receipts.subjects_hmac(ids, key)
    if receipt.subjects.hmac is None:
        return Check("subjects", False, "the receipt carries no HMAC of its subjects")
    if found != receipt.subjects.hmac or len(ids) != receipt.subjects.count:
        return Check("subjects", False, f"the HMAC of the {len(ids)} given subjects is not the receipt's")
    return Check("subjects", True, f"the receipt's HMAC covers exactly the {len(ids)} given subjects")


def verify_receipt(objects: Objects, receipt_uri: str, public_pem: bytes, *, registry: str | None = None,
                   subjects: tuple[list[str], bytes] | None = None) -> list[Check]:
    """Every check of the receipt at ``receipt_uri`` (see the module docstring)."""
    try:
        data = objects.read_at_most(receipt_uri, RECEIPT_MAX_BYTES + 1)
        if len(data) > RECEIPT_MAX_BYTES:
            raise ValueError(f"it is larger than {RECEIPT_MAX_BYTES} bytes")
        stored = receipts.read_stored(data)
        where = _where(stored, registry)
    except ObjectNotFound:
        return [Check("receipt", False, f"{receipt_uri} does not exist")]
    except (StorageError, ValueError) as err:
        return [Check("receipt", False, f"{receipt_uri} cannot be read as a receipt: {err}")]
    receipt = stored.receipt
    checks = [_signature(stored, public_pem, where.name),
              _model(objects, where, "base-model", receipt.base, complete=False),
              _model(objects, where, "candidate-model", receipt.candidate, complete=True),
              _report(objects, where, receipt.report), _alias_history(objects, where, receipt),
              _ledger(objects, where, receipt)]
    if subjects is not None:
        checks.append(_subjects(receipt, *subjects))
    return checks


def _read_file(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidSpec(f"{option} {path} cannot be read: {err.strerror or err}.") from err


def verify_command(args: argparse.Namespace) -> int:
    try:
        public_pem = _read_file(args.public_key, "--public-key")
        signing.load_public_key(public_pem)
        if bool(args.subjects) != bool(args.hmac_key_file):
            raise InvalidSpec("--subjects and --hmac-key-file go together.")
        subjects = None
        if args.subjects:
            ids = parse_subjects(_read_file(args.subjects, "--subjects").decode("utf-8"))
            subjects = (ids, _read_file(args.hmac_key_file, "--hmac-key-file"))
    except (InvalidSpec, signing.SigningError, ValueError) as err:
        print(f"forgetmi receipt verify: {err}", file=sys.stderr)
        return EXIT_INVALID
    checks = verify_receipt(storage.DEFAULT, args.receipt_uri, public_pem, registry=args.registry,
                            subjects=subjects)
    for check in checks:
        print(check.line())
    return EXIT_FAILED if any(check.ok is False for check in checks) else EXIT_OK


def public_key_command(args: argparse.Namespace) -> int:
    if not args.signing_key_file:
        print(f"forgetmi receipt public-key: {SIGNING_KEY_OPTION} is required (or ${SIGNING_KEY_FILE_ENV}).",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        pem = read_signing_key(args.signing_key_file)
    except InvalidSpec as err:
        print(f"forgetmi receipt public-key: {err}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(signing.public_key_pem(pem).decode("ascii"))
    return EXIT_OK


def add_signing_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(SIGNING_KEY_OPTION, metavar="PATH", default=os.environ.get(SIGNING_KEY_FILE_ENV) or None,
                        help="Ed25519 private key (PEM PKCS#8, `openssl genpkey -algorithm ed25519`) that signs the "
                        f"receipt as a DSSE envelope, as in a cluster (default: ${SIGNING_KEY_FILE_ENV}; without a "
                        "key the receipt is plain JSON, unsigned)")


def add_receipt_command(commands: Any) -> None:
    """``forgetmi receipt verify|public-key`` under the ``forgetmi`` subcommands."""
    receipt = commands.add_parser("receipt", help="verify a signed receipt; print the signing key's public key",
                                  description="Check a receipt against the registry, or print a public key.")
    actions = receipt.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check a receipt's signature, models, report, alias history and ledger",
        description="Check the receipt from storage alone: exit 0 when every check holds, 1 with a FAILED line "
        "per failed check, 2 for bad arguments.")
    verify.add_argument("receipt_uri", metavar="RECEIPT_URI", help="the receipt (file:// or s3://)")
    verify.add_argument("--public-key", required=True, metavar="FILE", help="PEM SubjectPublicKeyInfo public key")
    verify.add_argument("--registry", metavar="URI", help="read the models, report, alias and ledger from this "
                        "registry instead of the one the receipt names")
    verify.add_argument("--subjects", metavar="FILE", help="the forget list (one ID per line or a JSON list): check "
                        "the receipt's HMAC of the subjects (with --hmac-key-file)")
    verify.add_argument("--hmac-key-file", metavar="PATH", help="the receipt HMAC key (its bytes exactly)")
    verify.set_defaults(handler=verify_command)
    public = actions.add_parser("public-key", help="print the PEM public key of a signing key",
                                description="Print the PEM SubjectPublicKeyInfo of an Ed25519 signing key.")
    add_signing_key_option(public)
    public.set_defaults(handler=public_key_command)
