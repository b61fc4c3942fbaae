"""``forgetmi ledger verify --registry URI --model NAME``: check a model's forget ledger (docs/ledger.md)
from storage alone, one line per problem:

- ``chain``: every entry parses, the numbers run 0, 1, 2, … without a gap, and each entry's
  ``previous_sha256`` is the sha256 of the entry before it (an edited, removed or inserted entry breaks it);
- ``descent``: every alias of the model names a version that descends (the ``parent`` chain of the
  versions' ``metadata.json``) from the candidate of every erasure in the ledger;
- ``history``: the alias records match the ledger — each erasure's candidate was an alias target
  (else "not promoted"); since the first erasure, every alias move was made by a request (a record
  without one is a manual edit), and every move to a request's candidate has that request's entry.

Exit 0 when all hold (one ``ok`` line), 1 with a ``FAILED`` line per problem, 2 for bad arguments.
``--ledger-key-file`` (for ``forgetmi run``) is read here too: the key is the file's bytes exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.local import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from forgetmi_operator.registry import aliases, ledger
from forgetmi_operator.registry.ledger import LedgerEntry
from forgetmi_trainer import storage
from forgetmi_trainer.contract.registry import PreviousVersion, RequestRef, parse_alias_record
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage import Objects

LEDGER_KEY_FILE_ENV = "FORGETMI_LEDGER_KEY_FILE"
LEDGER_KEY_OPTION = "--ledger-key-file"
ALIASES_DIR = "aliases"


def read_ledger_key(path: str) -> bytes:
    """The ledger key: the bytes of ``path`` exactly (as a Secret stores them); InvalidSpec when unusable."""
    try:
        key = Path(path).read_bytes()
    except OSError as err:
        raise InvalidSpec(f"{LEDGER_KEY_OPTION} {path} cannot be read: {err.strerror or err}.") from err
    if not key:
        raise InvalidSpec(f"{LEDGER_KEY_OPTION} {path} is empty; the forget ledger needs a non-empty key.")
    return key


def add_ledger_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(LEDGER_KEY_OPTION, metavar="PATH", default=os.environ.get(LEDGER_KEY_FILE_ENV) or None,
                        help="file whose bytes, exactly, are the forget ledger's HMAC key, as in a cluster: the "
                        "model's ledger is read (earlier erasures' patients are left out of training) and the "
                        f"promotion appended to it (default: ${LEDGER_KEY_FILE_ENV}; without a key no ledger is "
                        "written and no list of earlier erasures' patients is made)")


def add_ledger_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ledgering = commands.add_parser("ledger", help="check a model's forget ledger",
                                    description="The per-model forget ledger (docs/ledger.md).")
    actions = ledgering.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verifying = actions.add_parser(
        "verify", help="check the ledger's chain, the aliases' descent and the alias history",
        description="Check the forget ledger of a model: the hash chain is intact, every alias names a version "
        "descending from every erasure, and the alias history matches the ledger. Exit 0 when all hold, 1 with "
        "one line per problem.")
    verifying.add_argument("--registry", required=True, metavar="URI", help="the registry (file:// or s3://)")
    verifying.add_argument("--model", required=True, metavar="NAME", help="the model's name in the registry")
    verifying.set_defaults(handler=verify_command)


def _who(request: RequestRef) -> str:
    return f"request {request.namespace}/{request.name}"


def _erasure(entry: LedgerEntry) -> str:
    return f"erasure {entry.seq} ({_who(entry.request)}, candidate '{entry.candidate_version}')"


def _aliases(objects: Objects, registry: str, name: str) -> dict[str, aliases.AliasRecord]:
    folder = storage.join(registry, name, ALIASES_DIR)
    found = {}
    for uri in objects.list_uris(folder):
        alias = uri.rsplit("/", 1)[-1].removesuffix(".json")
        found[alias] = parse_alias_record(objects.read_at_most(uri, aliases.RECORD_MAX_BYTES + 1), uri)
    return found


def _descent(objects: Objects, registry: str, name: str, records: dict[str, aliases.AliasRecord],
             entries: list[LedgerEntry]) -> list[str]:
    problems = []
    for alias, record in sorted(records.items()):
        missed = ledger.undescended(aliases.lineage(objects, registry, name, record.version), entries)
        if missed is not None:
            problems.append(f"descent: alias '{alias}' names version '{record.version}', which does not descend from "
                            f"{_erasure(missed)}: the alias was moved back by hand, or to a pre-erasure version")
    return problems


def _moves(record: aliases.AliasRecord) -> list[PreviousVersion]:
    """Every version the alias was set to, newest first (the record itself, then its history)."""
    return [PreviousVersion(version=record.version, sha256=record.sha256, updated_at=record.updated_at,
                            request=record.request), *record.history]


def _history(objects: Objects, registry: str, name: str, records: dict[str, aliases.AliasRecord],
             entries: list[LedgerEntry]) -> list[str]:
    problems = []
    targets = {(move.version, move.request.uid if move.request else None)
               for record in records.values() for move in _moves(record)}
    lineages = [set(aliases.lineage(objects, registry, name, record.version)) for record in records.values()]
    for entry in entries:
        promoted = (entry.candidate_version, entry.request.uid) in targets or any(
            entry.candidate_version in chain for chain in lineages)
        if not promoted:
            problems.append(f"history: {_erasure(entry)} is not promoted: no alias ever named its candidate")
    erased = {(entry.candidate_version, entry.request.uid) for entry in entries}
    for alias, record in sorted(records.items()):
        moves = _moves(record)
        recorded = [i for i, move in enumerate(moves) if (move.version, move.request.uid if move.request else None)
                    in erased]
        since = max(recorded) if recorded else len(moves)  # the oldest move the ledger records, newest first
        for move in moves[:since] if entries else ():  # the moves since the first recorded erasure
            problems.extend(_move_problem(objects, registry, name, alias, move, entries))
    return problems


def _move_problem(objects: Objects, registry: str, name: str, alias: str, move: PreviousVersion,
                  entries: list[LedgerEntry]) -> list[str]:
    """A move of the alias after an erasure must be a request's: a promotion (to the version that request
    made) with its ledger entry, or a rollback; one by no request is a manual edit."""
    where = f"alias '{alias}' was set to version '{move.version}' at {move.updated_at}"
    if move.request is None:
        return [f"history: {where} by no request: a manual edit"]
    made_by = aliases.version_metadata(objects, registry, name, move.version).get("request")
    if made_by == f"{move.request.namespace}/{move.request.name}" and not ledger.holds_request(entries,
                                                                                               move.request.uid):
        return [f"history: {where} by {_who(move.request)}, which promoted its candidate but has no ledger entry "
                "(promoted without the ledger key, or its entry was lost)"]
    return []


def verify_ledger(objects: Objects, registry: str, name: str) -> list[str]:
    """Every problem of the model's ledger and aliases, one sentence each ([] when all hold)."""
    try:
        entries = ledger.read_ledger(objects, registry, name)
    except ledger.LedgerError as err:
        return [f"chain: {err}"]
    try:
        records = _aliases(objects, registry, name)
        return _descent(objects, registry, name, records, entries) + _history(objects, registry, name, records,
                                                                            entries)
    except (aliases.RegistryError, ValueError) as err:
        return [f"aliases: {err}"]


def verify_command(args: argparse.Namespace) -> int:
    try:
        problems = verify_ledger(storage.DEFAULT, args.registry, args.model)
    except StorageError as err:
        print(f"forgetmi ledger verify: {err}", file=sys.stderr)
        return EXIT_INVALID
    for problem in problems:
        print(f"FAILED {problem}")
    if problems:
        return EXIT_FAILED
    count = len(ledger.read_ledger(storage.DEFAULT, args.registry, args.model))
    print(f"ok ledger of model {args.model}: {count} erasures, chain intact, every alias descends from every "
          "erasure, alias history matches")
    return EXIT_OK
