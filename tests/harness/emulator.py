"""A Kubernetes API server for tests: kmock's scaffold (HTTP, request parsing, API discovery)
with a stateful store that behaves closely enough to a real API server to drive Kopf.

What kmock 0.8's own ``KubernetesEmulator`` lacks (see TESTING.md) is done here: objects get
``uid``, ``resourceVersion``, ``creationTimestamp`` and ``generation`` (bumped on spec changes);
create answers 201 and honours ``generateName``; merge, strategic-merge (treated as merge) and
JSON patches, with ``test`` failures answered 422; the ``status`` subresource; label and field
selectors; lists carry a real ``resourceVersion`` and watches replay from it, subscribing before
replaying so nothing is lost; deletion honours finalizers and garbage-collects owned objects
(a dependent goes with its last owner; one that keeps an owner loses the deleted owner's reference).

The store is thread-safe: tests and the Job-runner fixture read and write it directly
(:meth:`ApiServer.get`, :meth:`create`, :meth:`patch`) from other threads.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums, rendering

from harness import tables
from harness.selectors import SelectorError, parse_field_selector, parse_label_selector

Key = tuple[str, str, str]  # group, version, plural
ObjKey = tuple[Key, str | None, str]

RESOURCES: dict[Key, dict[str, Any]] = {
    ("unlearning.forgetmi.io", "v1alpha1", "unlearnrequests"): {"kind": "UnlearnRequest", "status": True,
                                                               "shortnames": {"ur", "unlearn"}},
    ("", "v1", "configmaps"): {"kind": "ConfigMap", "shortnames": {"cm"}},
    ("", "v1", "secrets"): {"kind": "Secret"},
    ("", "v1", "pods"): {"kind": "Pod", "status": True, "shortnames": {"po"}},
    ("", "v1", "events"): {"kind": "Event", "shortnames": {"ev"}},
    ("", "v1", "namespaces"): {"kind": "Namespace", "namespaced": False, "shortnames": {"ns"}},
    ("", "v1", "serviceaccounts"): {"kind": "ServiceAccount", "shortnames": {"sa"}},
    ("", "v1", "services"): {"kind": "Service", "status": True, "shortnames": {"svc"}},
    ("batch", "v1", "jobs"): {"kind": "Job", "status": True},
    ("apps", "v1", "deployments"): {"kind": "Deployment", "status": True, "shortnames": {"deploy"}},
    ("rbac.authorization.k8s.io", "v1", "roles"): {"kind": "Role"},
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): {"kind": "RoleBinding"},
    ("rbac.authorization.k8s.io", "v1", "clusterroles"): {"kind": "ClusterRole", "namespaced": False},
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"): {"kind": "ClusterRoleBinding", "namespaced": False},
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): {"kind": "CustomResourceDefinition",
                                                                   "namespaced": False, "status": True,
                                                                   "shortnames": {"crd", "crds"}},
}
TRAINER_RESOURCES: dict[Key, dict[str, Any]] = {
    ("trainer.kubeflow.org", "v1alpha1", "trainjobs"): {"kind": "TrainJob", "status": True},
    ("trainer.kubeflow.org", "v1alpha1", "trainingruntimes"): {"kind": "TrainingRuntime"},
    ("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes"): {"kind": "ClusterTrainingRuntime",
                                                                      "namespaced": False},
}
"""Kubeflow Trainer v2's resources: served only once :meth:`ApiServer.serve` is called for them
(``harness.cluster.install_trainer``), so a cluster without the Trainer CRDs exists for tests too."""
CRDS: Key = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?/?$")
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchTestFailed(Exception):
    pass


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def json_patch(target: Any, ops: list[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else ""
        kind = op["op"]
        if kind == "test":
            actual = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if actual != op.get("value"):
                raise PatchTestFailed(f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
    return doc


class ApiServer(kmock.KubernetesScaffold):
    """kmock's scaffold plus the stateful store above (construct, then :meth:`start`)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.lock = threading.RLock()
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.history: list[tuple[int, Key, dict[str, Any]]] = []
        self.watchers: list[tuple[Key, asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []
        self.created: list[ObjKey] = []  # every successful create, in order (duplicates are visible)
        self.rv = itertools.count(1)
        self.last_rv = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.api_url = ""
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.served: dict[Key, dict[str, Any]] = {}
        for key, info in RESOURCES.items():
            self.serve(key, info)

    def serve(self, key: Key, info: Mapping[str, Any]) -> None:
        """Serve resource ``key`` (``info`` as in :data:`RESOURCES`), in API discovery too; e.g. the
        :data:`TRAINER_RESOURCES` of a cluster with Kubeflow Trainer installed."""
        group, version, plural = key
        with self.lock:
            self.served[key] = dict(info)
            self.resources[f"{group}/{version}/{plural}" if group else f"{version}/{plural}"] = kmock.ResourceInfo(
                kind=info["kind"], namespaced=info.get("namespaced", True), verbs=VERBS,
                singular=info["kind"].lower(), shortnames=info.get("shortnames", set()),
                subresources={"status"} if info.get("status") else set())

    # ---- serving ---------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with self, kmock.Server(self, host="127.0.0.1") as server:
                self.api_url = f"http://127.0.0.1:{server.port}"
                ready.set()
                await self._stop.wait()
                for _, loop, queue in list(self.watchers):
                    loop.call_soon_threadsafe(queue.put_nowait, {})

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name="api-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("The emulated API server did not start.")
        return self.api_url

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    # ---- store (thread-safe) -----------------------------------------------------------------

    def _notify(self, key: Key, type_: str, obj: dict[str, Any]) -> None:
        event = {"type": type_, "object": copy.deepcopy(obj)}
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append((rv, key, event))
        for wkey, loop, queue in self.watchers:
            if wkey == key:
                loop.call_soon_threadsafe(queue.put_nowait, event)

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.last_rv = next(self.rv)
        obj["metadata"]["resourceVersion"] = str(self.last_rv)

    def create(self, key: Key, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(dict(body))
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if namespace is not None:
                meta["namespace"] = namespace
            okey = (key, meta.get("namespace"), meta["name"])
            if okey in self.objects:
                raise _ApiError(409, "AlreadyExists", f"{key[2]} {meta['name']!r} already exists")
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            group, version, _ = key
            obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
            obj.setdefault("kind", self.served[key]["kind"])
            self._stamp(obj)
            self.objects[okey] = obj
            self.created.append(okey)
            self._notify(key, "ADDED", obj)
            return copy.deepcopy(obj)

    def get(self, key: Key, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get((key, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def list(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(obj) for (k, ns, _), obj in self.objects.items()
                    if k == key and (namespace is None or ns == namespace)]

    def patch(self, key: Key, namespace: str | None, name: str, patch: Any, *, content_type: str = "merge",
              subresource: str | None = None) -> dict[str, Any]:
        with self.lock:
            okey = (key, namespace, name)
            current = self.objects.get(okey)
            if current is None:
                raise _ApiError(404, "NotFound", f"{key[2]} {name!r} not found")
            if "json-patch" in content_type:
                try:
                    new = json_patch(current, patch)
                except (PatchTestFailed, KeyError, IndexError, ValueError) as err:
                    raise _ApiError(422, "Invalid", str(err)) from err
            else:
                new = merge_patch(current, patch)
            if subresource == "status":
                new = {**current, "status": new.get("status")}
            elif self.served[key].get("status"):
                new["status"] = current.get("status")
            if new.get("status") is None:
                new.pop("status", None)
            new["metadata"] = {**new["metadata"], "uid": current["metadata"]["uid"],
                               "creationTimestamp": current["metadata"]["creationTimestamp"]}
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            self._stamp(new)
            self.objects[okey] = new
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                self._remove(okey)
            else:
                self._notify(key, "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, key: Key, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            okey = (key, namespace, name)
            current = self.objects.get(okey)
            if current is None:
                raise _ApiError(404, "NotFound", f"{key[2]} {name!r} not found")
            if current["metadata"].get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = _now()
                    self._stamp(current)
                    self._notify(key, "MODIFIED", current)
                return copy.deepcopy(current)
            self._remove(okey)
            return copy.deepcopy(current)

    def _remove(self, okey: ObjKey) -> None:
        obj = self.objects.pop(okey)
        self._stamp(obj)
        self._notify(okey[0], "DELETED", obj)
        uid = obj["metadata"]["uid"]
        owned = [k for k, o in self.objects.items()
                 if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])]
        live = {o["metadata"].get("uid") for o in self.objects.values()}
        for child in owned:  # garbage collection: a dependent goes with its last owner
            current = self.objects.get(child)
            if current is None:
                continue
            refs = current["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") in live for ref in refs if ref.get("uid") != uid):
                current["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != uid]
                self._stamp(current)  # Kubernetes drops the reference to the deleted owner
                self._notify(child[0], "MODIFIED", current)
            else:
                self.delete(child[0], child[1], child[2])

    def iter_objects(self, key: Key) -> Iterator[dict[str, Any]]:
        yield from self.list(key)

    # ---- HTTP --------------------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """kmock's resource list, as kubectl needs it: the core group is ``v1`` (not ``/v1``) and
        subresources carry no short names (kubectl warns of ambiguous names otherwise)."""
        payload = await super()._serve_version(request)
        if isinstance(payload, dict):
            payload["groupVersion"] = str(payload.get("groupVersion", "")).lstrip("/")
            for entry in payload.get("resources", []):
                if "/" in entry["name"]:
                    entry["shortNames"], entry["categories"] = [], []
        return payload

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser reads /api/v1/namespaces as a namespace prefix and fails on it.
        match = NAMESPACES_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        await raw_request.read()
        query = dict(raw_request.query)
        if raw_request.method == "POST":
            return await self._handle(rendering.Request(
                method="POST", params=query, raw_request=raw_request, data=await raw_request.json(),
                action=enums.action.CREATE, resource=kmock.resource("v1/namespaces")))
        if raw_request.method != "GET":
            return _status(405, "MethodNotAllowed", "Only get, list, watch and create of namespaces are served.")
        action = (enums.action.WATCH if query.get("watch") == "true" else
                  enums.action.FETCH if match["name"] else enums.action.LIST)
        return await self._handle(rendering.Request(method="GET", params=query, raw_request=raw_request,
                                                    action=action, resource=kmock.resource("v1/namespaces"),
                                                    name=match["name"]))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        key = (resource.group, resource.version, resource.plural) if resource is not None else None
        if key not in self.served or request.action is None:
            return await super()._handle(request)
        try:
            return await self._serve(key, request)
        except _ApiError as err:
            return _status(err.code, err.reason, err.message)
        except SelectorError as err:
            return _status(400, "BadRequest", str(err))

    async def _serve(self, key: Key, request: rendering.Request) -> aiohttp.web.StreamResponse:
        ns, name, action = request.namespace, request.name, request.action
        if action == enums.action.CREATE:
            return aiohttp.web.json_response(self.create(key, ns, request.data or {}), status=201)
        as_table = "as=Table" in request.headers.get("Accept", "")
        if action == enums.action.FETCH:
            found = self.get(key, ns, name)
            if found is None:
                raise _ApiError(404, "NotFound", f"{key[2]} {name!r} not found")
            if as_table and (columns := self._printer_columns(key)) is not None:
                return aiohttp.web.json_response(tables.table(columns, [found], found["metadata"]["resourceVersion"]))
            return aiohttp.web.json_response(found)
        if action == enums.action.UPDATE:
            content_type = request.headers.get("Content-Type", "application/merge-patch+json")
            data = request.data if request.data is not None else json.loads(request.text or "{}")
            return aiohttp.web.json_response(self.patch(key, ns, name, data, content_type=content_type,
                                                        subresource=request.subresource))
        if action == enums.action.DELETE:
            return aiohttp.web.json_response(self.delete(key, ns, name))
        selected = _selector(request.params)
        if action == enums.action.LIST:
            with self.lock:
                items = [obj for obj in self.list(key, ns) if selected(obj)]
                rv = self.last_rv
            if as_table and (columns := self._printer_columns(key)) is not None:
                return aiohttp.web.json_response(tables.table(columns, items, str(rv)))
            kind = self.served[key]["kind"]
            return aiohttp.web.json_response({"apiVersion": f"{key[0]}/{key[1]}" if key[0] else key[1],
                                              "kind": f"{kind}List", "metadata": {"resourceVersion": str(rv)},
                                              "items": items})
        return await self._watch(key, request, selected)

    def _printer_columns(self, key: Key) -> list[dict[str, Any]] | None:
        """The stored CRD's ``additionalPrinterColumns`` for ``key``'s version (None: no such CRD,
        and kubectl falls back to its own NAME/AGE printing of plain objects)."""
        group, version, plural = key
        crd = self.get(CRDS, None, f"{plural}.{group}") if group else None
        if crd is None:
            return None
        served = next((v for v in crd["spec"].get("versions") or [] if v.get("name") == version), None)
        return None if served is None else list(served.get("additionalPrinterColumns") or [])

    async def _watch(self, key: Key, request: rendering.Request, selected: Any) -> aiohttp.web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        since = request.params.get("resourceVersion")
        loop = asyncio.get_running_loop()
        with self.lock:
            entry = (key, loop, queue)
            self.watchers.append(entry)
            if since:
                backlog = [event for rv, k, event in self.history if k == key and rv > int(since)]
            else:
                backlog = [{"type": "ADDED", "object": obj} for obj in self.list(key)]
            snapshot_rv = self.last_rv
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        timeout = float(request.params.get("timeoutSeconds") or 300)
        deadline = loop.time() + timeout
        try:
            for event in backlog:
                await self._send(response, event, request.namespace, selected)
            if request.params.get("sendInitialEvents") == "true":  # a "watch list" (kubectl wait)
                await self._send_initial_events_end(response, key, snapshot_rv)
            while (left := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if not event:
                    break
                await self._send(response, event, request.namespace, selected)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self.lock:
                self.watchers.remove(entry)
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def _send_initial_events_end(self, response: aiohttp.web.StreamResponse, key: Key, rv: int) -> None:
        """The BOOKMARK that ends a watch list's initial events (kubectl wait waits for it)."""
        group, version, _ = key
        bookmark = {"type": "BOOKMARK", "object": {
            "apiVersion": f"{group}/{version}" if group else version, "kind": self.served[key]["kind"],
            "metadata": {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}}}
        await response.write(json.dumps(bookmark).encode() + b"\n")

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, event: dict[str, Any], namespace: str | None,
                    selected: Any) -> None:
        obj = event["object"]
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return
        if not selected(obj):
            return
        await response.write(json.dumps(event).encode() + b"\n")


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                                      "code": code, "reason": reason, "message": message}, status=code)


def _selector(params: Mapping[str, str]) -> Any:
    labels = parse_label_selector(params.get("labelSelector"))
    fields = parse_field_selector(params.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)
