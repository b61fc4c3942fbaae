"""coalescer.share: the leader's launch made the batch's (owned by every request, mounting the batch's
Secret instead of the leader's own copy) without touching anything else of it."""

from __future__ import annotations

import copy

from harness.examples import full_spec

from forgetmi_operator.api import naming
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import coalescer, jobs

UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
NAME = "leader"
NAMESPACE = "radiology"
OWNERS = [{"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "name": n, "uid": u,
           "controller": n == NAME, "blockOwnerDeletion": True} for n, u in ((NAME, UID), ("other", "u2"))]


def _secret_names(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "secretName"] + [n for v in node.values() for n in _secret_names(v)]
    if isinstance(node, list):
        return [n for item in node for n in _secret_names(item)]
    return []


def test_the_shared_job_mounts_the_batch_secret_and_is_owned_by_every_request() -> None:
    built = jobs.build_launch(full_spec(), Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    before = copy.deepcopy(built.job)
    own = naming.subjects_secret_name(NAME, UID)
    batch = naming.batch_subjects_secret_name(NAME, UID)
    assert own in _secret_names(built.job)
    configmap, job = coalescer.share(built, own, batch, OWNERS)
    assert own not in _secret_names(job) and batch in _secret_names(job)
    assert _secret_names(job).count(batch) == _secret_names(before).count(own)  # every mount swapped
    assert job["metadata"]["ownerReferences"] == OWNERS
    assert configmap["metadata"]["ownerReferences"] == OWNERS
    assert configmap["data"] == built.configmap["data"]
    assert configmap["metadata"]["name"] == built.configmap["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["containers"] == before["spec"]["template"]["spec"]["containers"]
    assert built.job == before  # the leader's own launch is left as it was
    others = [n for n in _secret_names(before) if n != own]
    assert [n for n in _secret_names(job) if n != batch] == others  # other Secrets (credentials) stay
