"""``forgetmi validate -f request.yaml``: every UnlearnRequest in a (multi-document) YAML file checked
against the CRD schema, its CEL rules and the pydantic model, each problem printed with its field path.

The items of a ``v1 List`` (what ``kubectl get -o yaml`` prints) are checked one by one; other kinds
(a Secret holding the patient IDs, say) are skipped, but a misspelt kind of this API group is a
problem, as kubectl would refuse it. Exit 0 when all are valid, 2 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from forgetmi_operator import GROUP, KIND
from forgetmi_operator.local import EXIT_INVALID, EXIT_OK
from forgetmi_operator.local.documents import KEY_SHOWN, DocumentError, is_list, load_documents, objects, shown_key
from forgetmi_operator.local.schema import Problem, validate_request


def _group(api_version: Any) -> str | None:
    if not isinstance(api_version, str):
        return None
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def object_problems(doc: Any) -> list[Problem] | None:
    """The problems of one object; None for an object of another API group, which is not ours to check."""
    if isinstance(doc, list):
        return [Problem("(document)", "is a YAML list, not a Kubernetes object: separate the requests with --- "
                        "or put them under items: of an apiVersion: v1, kind: List")]
    if is_list(doc):
        return [Problem("items", "must be a list of Kubernetes objects")]
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"] != KIND:
        if _group(doc.get("apiVersion")) != GROUP:
            return None
        return [Problem("kind", f"{GROUP} has no kind {shown_key(doc['kind'])} (kubectl: no matches for kind); "
                        f"must be {KIND}")]
    return validate_request(doc)


def _document_label(doc: Any, where: str) -> str:
    if not isinstance(doc, dict):
        return where
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    named = f" {name!r}" if isinstance(name, str) and name else ""
    kind = doc.get("kind")
    shown = kind if isinstance(kind, str) and kind and len(kind) <= KEY_SHOWN else KIND
    return f"{shown}{named} ({where})"


def validate_text(text: str, source: str) -> tuple[list[str], list[tuple[str, list[Problem]]]]:
    """Names of the valid requests and (description, problems) of the invalid documents."""
    try:
        docs = load_documents(text)
    except DocumentError as err:
        return [], [(source, [Problem("(document)", str(err))])]
    valid: list[str] = []
    invalid: list[tuple[str, list[Problem]]] = []
    for where, doc in objects(docs):
        problems = object_problems(doc)
        if problems is None:
            continue
        if problems:
            invalid.append((_document_label(doc, where), problems))
        else:
            valid.append(doc["metadata"].get("name") or doc["metadata"].get("generateName", ""))
    if not valid and not invalid:
        invalid.append((source, [Problem("(document)", f"no {KIND} found")]))
    return valid, invalid


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def validate_command(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.filename:
        source = "stdin" if path == "-" else path
        try:
            text = _read(path)
        except (OSError, UnicodeDecodeError) as err:
            print(f"{source}: cannot be read: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        valid, invalid = validate_text(text, source)
        for what, problems in invalid:
            print(f"{source}: {what} is invalid:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        if invalid:
            status = EXIT_INVALID
        else:
            plural = "" if len(valid) == 1 else "s"
            print(f"OK: {source}: {len(valid)} {KIND}{plural} valid ({', '.join(valid)})")
    return status
