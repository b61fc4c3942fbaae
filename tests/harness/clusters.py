"""Test helper: a :class:`~forgetmi_operator.cluster.context.Cluster` around a fake API client, with the
cluster's own ports (Secrets, Jobs, serving targets, the receipt key) as the operator assembles them.

Its storage identity is the tests' own (``storage.DEFAULT``, ``file://`` included) unless
``storage_for`` is given: these tests keep their registries on ``file://`` for speed;
``tests/operator/cluster/test_identity.py`` tests the cluster's real one, and the end-to-end tests
run with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import outcome
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.launcher import ClusterTrainers
from forgetmi_operator.cluster.metrics import Metrics
from forgetmi_operator.cluster.phases import PhaseBook
from forgetmi_operator.cluster.scheduler import LookScheduler, is_open
from forgetmi_operator.cluster.targets import ClusterTargets
from forgetmi_operator.lifecycle import subjects
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_trainer.storage import DEFAULT, Objects


async def tests_identity(body: Mapping[str, Any]) -> Objects:
    return DEFAULT


def make_cluster(kube: Any, settings: Settings | None = None, *,
                 receipt_key: Callable[[], Awaitable[bytes | None]] | None = None,
                 post_event: Callable[..., None] | None = None,
                 storage_for: Callable[[Mapping[str, Any]], Awaitable[Objects]] = tests_identity) -> Cluster:
    """A Cluster on ``kube`` (anything with the methods the operator calls); ``receipt_key`` defaults
    to the operator's (the Secret that ``settings`` names), ``post_event`` to dropping Events."""
    ours = settings or Settings()
    ports = Ports(settings=ours, secrets=kube, trainers=ClusterTrainers(kube, ours), targets=ClusterTargets(kube, ours),
                  storage_for=storage_for, receipt_key=receipt_key or (lambda: subjects.receipt_key(kube, ours)))
    cluster = Cluster(settings=ours, kube=kube, ports=ports, phases=PhaseBook(Metrics()),
                      post_event=post_event or (lambda body, type, reason, message: None),
                      scheduler=LookScheduler(lambda entry: outcome.look(cluster, entry), is_open=is_open))
    return cluster
