"""The ``forgetmi`` command: ``validate`` (here), ``run`` (:mod:`forgetmi_operator.local`) and ``demo``
(:mod:`forgetmi_operator.demo`).

``forgetmi validate -f request.yaml`` checks every UnlearnRequest in a (multi-document) YAML file
against the CRD schema, its CEL rules and the pydantic model, and prints each problem with its field
path; other kinds (a Secret holding the patient IDs, say) are skipped. Exit 0 when all are valid, 2
otherwise. ``run`` and ``demo`` are imported only when used, so this module stays light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from forgetmi_operator import KIND, __version__
from forgetmi_operator.schema import Problem, validate_request

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_INVALID = 2
LOCAL_MODULE = "forgetmi_operator.local"
DEMO_MODULE = "forgetmi_operator.demo"
HMAC_KEY_FILE_ENV = "FORGETMI_RECEIPT_HMAC_KEY_FILE"


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


MAX_NODES = 200_000
"""Values per file (after YAML aliases expand); the API server refuses objects over 3 MB anyway."""


class _TooLarge(ValueError):
    """A YAML document is recursive, or its aliases expand beyond ``MAX_NODES`` values."""


def _jsonable(value: Any, budget: list[int], parents: frozenset[int] = frozenset()) -> Any:
    """Keys as strings and no YAML-only types, as after the YAML → JSON step of kubectl."""
    budget[0] -= 1
    if budget[0] < 0 or id(value) in parents:
        raise _TooLarge
    if isinstance(value, dict):
        inner = parents | {id(value)}
        return {str(k): _jsonable(v, budget, inner) for k, v in value.items()}
    if isinstance(value, list):
        inner = parents | {id(value)}
        return [_jsonable(v, budget, inner) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | set):
        return str(value)
    return value


class DocumentError(ValueError):
    """A file is not YAML that Kubernetes could read; the message is one sentence without the content."""


def _yaml_message(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {getattr(err, 'problem', None) or 'malformed YAML'}"


def load_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream, JSON-compatible; raises :class:`DocumentError`."""
    try:
        docs = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as err:
        raise DocumentError(_yaml_message(err)) from err
    except RecursionError as err:
        raise DocumentError("not valid YAML: nested too deeply") from err
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as err:
        # PyYAML's constructors raise these for explicit tags with bad values (!!int abc, !!bool maybe).
        raise DocumentError("not valid YAML: a tagged value does not match its tag") from err
    budget = [MAX_NODES]
    try:
        return [_jsonable(doc, budget) for doc in docs]
    except (_TooLarge, RecursionError) as err:
        raise DocumentError("the YAML is recursive, nested too deeply or too large") from err


def _describe(doc: Any, index: int) -> str:
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    named = f" {name!r}" if isinstance(name, str) and name else ""
    return f"{KIND}{named} (document {index})"


def validate_text(text: str, source: str) -> tuple[list[str], list[tuple[str, list[Problem]]]]:
    """Names of the valid requests and (description, problems) of the invalid documents."""
    try:
        docs = load_documents(text)
    except DocumentError as err:
        return [], [(source, [Problem("(document)", str(err))])]
    valid: list[str] = []
    invalid: list[tuple[str, list[Problem]]] = []
    for index, doc in enumerate(docs, start=1):
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"] != KIND:
            continue
        problems = validate_request(doc)
        if problems:
            invalid.append((_describe(doc, index), problems))
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


def _local(module_name: str, name: str) -> Callable[[argparse.Namespace], int] | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        return None
    return getattr(module, name, None)


def _delegate(name: str, module: Callable[[], str] = lambda: LOCAL_MODULE) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module()`` (read when called) only when its command runs."""

    def handler(args: argparse.Namespace) -> int:
        module_name = module()
        command = _local(module_name, name)
        if command is None:
            print(f"forgetmi {args.command}: not available in this installation "
                  f"({module_name}.{name} is missing).", file=sys.stderr)
            return EXIT_UNAVAILABLE
        return command(args)

    return handler


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi", description="ForgetMI: unlearn patients from a served model, audited and gated.")
    parser.add_argument("--version", action="version", version=f"forgetmi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check UnlearnRequests against the CRD and print every problem",
        description="Check every UnlearnRequest in the files against the CRD schema, its CEL rules and the "
        "operator's model; other kinds are skipped. Exit 0 when valid, 2 otherwise.")
    validate.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                          help="YAML file with one or more documents ('-' reads stdin); repeatable")
    validate.set_defaults(handler=validate_command)

    run = commands.add_parser(
        "run", help="run an UnlearnRequest on this machine (a local process instead of a Job)",
        description="Run an UnlearnRequest through accept → trainer → gates → promotion → receipt on this "
        "machine, against file:// or s3:// storage.")
    run.add_argument("-f", "--filename", required=True, metavar="FILE", help="YAML file with the UnlearnRequest")
    run.add_argument("--workdir", metavar="DIR", help="folder for the run's files (job config, logs, progress)")
    run.add_argument("--secrets", metavar="FILE",
                     help="YAML file with the Secrets the request references (may be the request file itself)")
    run.add_argument("--hmac-key-file", metavar="PATH", default=os.environ.get(HMAC_KEY_FILE_ENV) or None,
                     help="file whose bytes, exactly (a trailing newline counts), are the key of the receipt's "
                     f"HMAC-SHA256 of the subject IDs, as in a cluster (default: ${HMAC_KEY_FILE_ENV}; "
                     "without a key the receipt has no digest)")
    run.set_defaults(handler=_delegate("run_command"))

    demo = commands.add_parser(
        "demo", help="build the small dataset and models and run one request end to end",
        description="Build the small multimodal dataset and models into a file:// registry, run an "
        "UnlearnRequest end to end and print the before/after table, the gate results and the promotion.")
    demo.add_argument("--workdir", metavar="DIR", default=".demo", help="folder for the registry and data "
                      "(default: .demo)")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    demo.add_argument("--patients", type=_positive, metavar="N",
                      help="patients in the generated dataset (default: 150)")
    demo.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    demo.set_defaults(handler=_delegate("demo_command", lambda: DEMO_MODULE))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
