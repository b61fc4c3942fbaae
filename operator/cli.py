"""The ``forgetmi`` command: ``validate`` (here), ``run`` (:mod:`forgetmi_operator.local`) and ``demo``
(:mod:`forgetmi_operator.demo`).

``forgetmi validate -f request.yaml`` checks every UnlearnRequest in a (multi-document) YAML file
against the CRD schema, its CEL rules and the pydantic model, and prints each problem with its field
path. The items of a ``v1 List`` (what ``kubectl get -o yaml`` prints) are checked one by one; other
kinds (a Secret holding the patient IDs, say) are skipped, but a misspelt kind of this API group is a
problem, as kubectl would refuse it. Exit 0 when all are valid, 2 otherwise. ``run`` and ``demo`` are
imported only when used, so this module stays light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from forgetmi_operator import GROUP, KIND, VERSION, __version__
from forgetmi_operator.schema import Problem, validate_request

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_INVALID = 2
LOCAL_MODULE = "forgetmi_operator.local"
DEMO_MODULE = "forgetmi_operator.demo"
HMAC_KEY_FILE_ENV = "FORGETMI_RECEIPT_HMAC_KEY_FILE"


LIST_KINDS = (("v1", "List"), (f"{GROUP}/{VERSION}", f"{KIND}List"))
"""(apiVersion, kind) of the lists whose items kubectl applies one by one."""
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_SHOWN = 60


def _shown_key(key: Any) -> str:
    text = str(key)
    return f'"{text}"' if len(text) <= _KEY_SHOWN else f'"{text[:_KEY_SHOWN]}..."'


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings, and a key repeated in a mapping is an error
    (``mapping key "x" already defined``) instead of the last one winning. Keys merged in with ``<<``
    may be overridden, as in Go's YAML."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[type, Any], int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):
                    continue  # PyYAML refuses it below
                marker = (type(key), key)
                if marker in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"mapping key {_shown_key(key)} already defined at line {seen[marker]}",
                        key_node.start_mark)
                seen[marker] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


MAX_NODES = 200_000
"""Values per file (after YAML aliases expand); the API server refuses objects over 3 MB anyway."""


class _TooLarge(ValueError):
    """A YAML document is recursive, or its aliases expand beyond ``MAX_NODES`` values."""


_GO_PLAIN_FLOAT_LIMIT = 1e21
"""Go's JSON encoder writes a float64 below this without an exponent (``30`` for 30.0); from here on
as ``1e+21``, which an integer field refuses."""


def _jsonable(value: Any, budget: list[int], parents: frozenset[int] = frozenset()) -> Any:
    """Keys as strings, no YAML-only types, and whole-number floats as integers: what kubectl sends
    after its YAML → JSON step (Go's ``encoding/json`` writes ``float64(30)`` as ``30``)."""
    budget[0] -= 1
    if budget[0] < 0 or id(value) in parents:
        raise _TooLarge
    if isinstance(value, dict):
        inner = parents | {id(value)}
        return {str(k): _jsonable(v, budget, inner) for k, v in value.items()}
    if isinstance(value, list):
        inner = parents | {id(value)}
        return [_jsonable(v, budget, inner) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _GO_PLAIN_FLOAT_LIMIT:
        return int(value)  # kubectl's YAML → JSON writes 30.0 as 30, which an integer field accepts
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


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) in LIST_KINDS


def objects(docs: list[Any]) -> list[tuple[str, Any]]:
    """Each document as ``("document N", object)``; the items of a list, as kubectl applies them, each on
    its own as ``("document N item M", object)``. A list whose items are not a list stays whole."""
    found: list[tuple[str, Any]] = []
    pending = [(f"document {index}", doc) for index, doc in enumerate(docs, start=1)]
    while pending:
        where, doc = pending.pop(0)
        if _is_list(doc) and isinstance(doc.get("items"), list):
            pending[:0] = [(f"{where} item {index}", item) for index, item in enumerate(doc["items"], start=1)]
        else:
            found.append((where, doc))
    return found


def _group(api_version: Any) -> str | None:
    if not isinstance(api_version, str):
        return None
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def object_problems(doc: Any) -> list[Problem] | None:
    """The problems of one object; None for an object of another API group, which is not ours to check."""
    if isinstance(doc, list):
        return [Problem("(document)", "is a YAML list, not a Kubernetes object: separate the requests with --- "
                        "or put them under items: of an apiVersion: v1, kind: List")]
    if _is_list(doc):
        return [Problem("items", "must be a list of Kubernetes objects")]
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"] != KIND:
        if _group(doc.get("apiVersion")) != GROUP:
            return None
        return [Problem("kind", f"{GROUP} has no kind {_shown_key(doc['kind'])} (kubectl: no matches for kind); "
                        f"must be {KIND}")]
    return validate_request(doc)


def _describe(doc: Any, where: str) -> str:
    if not isinstance(doc, dict):
        return where
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    named = f" {name!r}" if isinstance(name, str) and name else ""
    kind = doc.get("kind")
    shown = kind if isinstance(kind, str) and kind and len(kind) <= _KEY_SHOWN else KIND
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
            invalid.append((_describe(doc, where), problems))
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
