"""The emulated API server's garbage collection follows Kubernetes': a dependent is deleted with its
last owner; one that keeps an owner stays and loses the reference to the deleted one. The coalescing
e2e tests rely on it (a batch's Job, owned by every request of the batch, runs on while one remains)."""

from __future__ import annotations

from typing import Any

from harness.cluster import JOBS, SECRETS
from harness.emulator import ApiServer

NAMESPACE = "ns"


def _owner(api: ApiServer, name: str) -> dict[str, Any]:
    made = api.create(SECRETS, NAMESPACE, {"metadata": {"name": name}, "type": "Opaque"})
    return {"apiVersion": "v1", "kind": "Secret", "name": name, "uid": made["metadata"]["uid"]}


def _job(api: ApiServer, name: str, owners: list[dict[str, Any]]) -> None:
    api.create(JOBS, NAMESPACE, {"metadata": {"name": name, "ownerReferences": owners}, "spec": {}})


def test_a_dependent_goes_with_its_last_owner_only() -> None:
    api = ApiServer()
    first, second = _owner(api, "a"), _owner(api, "b")
    _job(api, "shared", [first, second])
    _job(api, "own", [first])
    api.delete(SECRETS, NAMESPACE, "a")
    assert api.get(JOBS, NAMESPACE, "own") is None
    shared = api.get(JOBS, NAMESPACE, "shared")
    assert shared is not None and shared["metadata"]["ownerReferences"] == [second]
    api.delete(SECRETS, NAMESPACE, "b")
    assert api.get(JOBS, NAMESPACE, "shared") is None
