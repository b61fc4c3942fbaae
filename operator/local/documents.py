"""YAML files as kubectl reads them: documents, lists of objects, and refusals as one sentence.

:func:`load_documents` reads a (multi-document) YAML stream as Kubernetes would — timestamps stay
strings, a key repeated in a mapping is an error, whole-number floats become integers as kubectl's
YAML → JSON step writes them — and :func:`objects` expands ``kind: List`` items as kubectl applies
them. Neither ever echoes the content (it may hold patient IDs or credentials).
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import date, datetime
from typing import Any

import yaml

from forgetmi_operator import GROUP, KIND, VERSION

LIST_KINDS = (("v1", "List"), (f"{GROUP}/{VERSION}", f"{KIND}List"))
"""(apiVersion, kind) of the lists whose items kubectl applies one by one."""
_MERGE_TAG = "tag:yaml.org,2002:merge"
KEY_SHOWN = 60


def shown_key(key: Any) -> str:
    text = str(key)
    return f'"{text}"' if len(text) <= KEY_SHOWN else f'"{text[:KEY_SHOWN]}..."'


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
                        None, None, f"mapping key {shown_key(key)} already defined at line {seen[marker]}",
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


def is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) in LIST_KINDS


def objects(docs: list[Any]) -> list[tuple[str, Any]]:
    """Each document as ``("document N", object)``; the items of a list, as kubectl applies them, each on
    its own as ``("document N item M", object)``. A list whose items are not a list stays whole."""
    found: list[tuple[str, Any]] = []
    pending = [(f"document {index}", doc) for index, doc in enumerate(docs, start=1)]
    while pending:
        where, doc = pending.pop(0)
        if is_list(doc) and isinstance(doc.get("items"), list):
            pending[:0] = [(f"{where} item {index}", item) for index, item in enumerate(doc["items"], start=1)]
        else:
            found.append((where, doc))
    return found
