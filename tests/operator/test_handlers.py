"""The handlers module's own pieces (the e2e tests run its handlers under Kopf)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import kopf
import pytest
from harness.cluster import JOBS, REQUESTS, install_trainer, operator, start_cluster, wait_for
from harness.emulator import ApiServer

from forgetmi_operator import handlers
from forgetmi_operator.api.errors import ClusterUnavailable, SecretNotFound
from forgetmi_operator.cluster.trainjobs import TRAINJOB_API
from forgetmi_operator.lifecycle.steps import Step, failure


def test_the_watch_handlers_success_lines_are_filtered_and_failures_are_not() -> None:
    trainjob = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'trainjob_event' succeeded.",
                                 None, None)
    assert not handlers._QuietWatchHandlers().filter(trainjob)
    noise = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'job_event' succeeded.", None, None)
    start = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'start' succeeded.", None, None)
    failed = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler 'job_event' failed.", None, None)
    quiet = handlers._QuietWatchHandlers()
    assert not quiet.filter(noise)
    assert quiet.filter(start) and quiet.filter(failed)
    assert any(isinstance(f, handlers._QuietWatchHandlers) for f in logging.getLogger("kopf.objects").filters)


class _Cluster:
    def __init__(self) -> None:
        self.posted: list[Step] = []

    def post(self, body: object, step: Step) -> None:
        self.posted.append(step)


BODY = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1"}}


def test_a_step_becomes_the_status_patch_and_its_events() -> None:
    async def work() -> Step:
        return Step(status={"phase": "Pending", "jobName": "j"}, events=[("Normal", "JobCreated", "Created Job j.")])

    patch, cluster = kopf.Patch(), _Cluster()
    asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert patch["status"] == {"phase": "Pending", "jobName": "j"}
    assert [step.events for step in cluster.posted] == [[("Normal", "JobCreated", "Created Job j.")]]


def test_a_failed_step_is_applied_then_stops_kopf_for_good() -> None:
    async def work() -> Step:
        return failure(BODY, SecretNotFound("Secret ns/x does not exist."), accepting=True)

    patch, cluster = kopf.Patch(), _Cluster()
    with pytest.raises(kopf.PermanentError, match=r"Secret ns/x does not exist\."):
        asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert patch["status"]["phase"] == "Failed" and cluster.posted


def test_a_retryable_error_is_a_temporary_kopf_error_and_nothing_is_applied() -> None:
    async def work() -> Step:
        raise ClusterUnavailable("The API server could not be reached.")

    patch, cluster = kopf.Patch(), _Cluster()
    with pytest.raises(kopf.TemporaryError) as err:
        asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert err.value.delay == handlers.RETRY_DELAY_SECONDS
    assert "status" not in patch and not cluster.posted


# ---- the TrainJob watch, with and without Kubeflow Trainer's CRDs ----------------------------------------


def _watched(api: ApiServer, key: tuple[str, str, str]) -> bool:
    return any(watched == key for watched, _, _ in list(api.watchers))


@pytest.mark.timeout(90)
def test_without_trainers_crds_the_operator_runs_and_watches_trainjobs_once_they_are_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Kopf serves no handler of a resource the cluster lacks (it warns once) and keeps running; the
    CRD created later is seen by Kopf's watch of CRDs, which starts the TrainJob watch then."""
    api, namespace = start_cluster(tmp_path, monkeypatch.setenv)
    try:
        with operator(namespace) as runner:
            wait_for(lambda: _watched(api, JOBS) and _watched(api, REQUESTS), 30, "the Job and request watches")
            assert not _watched(api, TRAINJOB_API)
            install_trainer(api)
            wait_for(lambda: _watched(api, TRAINJOB_API), 30, "the TrainJob watch")
    finally:
        api.stop()
    assert runner.exception is None and runner.exit_code == 0
    unresolved = [r.getMessage() for r in caplog.records if "Unresolved resources cannot be served" in r.getMessage()]
    assert unresolved and "trainjobs" in unresolved[0]


@pytest.mark.timeout(90)
def test_a_trainjob_request_on_a_cluster_without_trainer_is_not_accepted_in_one_reconcile_creating_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    api, namespace = start_cluster(tmp_path, monkeypatch.setenv)
    request = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
               "metadata": {"name": "scaled"},
               "spec": {"model": {"registryUri": "s3://models/registry", "name": "cxr"},
                        "data": {"manifestUri": "s3://data/manifest.csv"},
                        "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}},
                        "resources": {"nodes": 2, "gpus": 8}}}
    before = len(api.created)
    try:
        with operator(namespace):
            api.create(REQUESTS, namespace, request)
            status = wait_for(lambda: ((api.get(REQUESTS, namespace, "scaled") or {}).get("status") or {}).get(
                "phase") == "Failed" and api.get(REQUESTS, namespace, "scaled")["status"], 30, "the request to fail")
            time.sleep(1.0)  # a second reconcile, were there one, would show in the log below
    finally:
        api.stop()
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "EngineUnavailable")
    assert accepted["message"].startswith("TrainJob needs Kubeflow Trainer v2; install it or use nodes: 1 (")
    assert "jobName" not in status
    made = [key[0][2] for key in api.created[before:]]
    assert set(made) <= {"unlearnrequests", "events"}  # no Secret copy, ConfigMap, Job or TrainJob
    starts = [r for r in caplog.records if r.getMessage().startswith("Handler 'start' failed permanently")]
    assert len(starts) == 1
