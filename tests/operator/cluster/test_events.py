"""cluster.events: an Event is named for what it says, so posting it again (a restart repeating a lost
step, a retried step) creates nothing; against the emulated API server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from harness.cluster import EVENTS, NAMESPACES
from harness.emulator import ApiServer
from kubernetes import client

from forgetmi_operator.cluster import events
from forgetmi_operator.cluster.kube import Kube

BODY = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1"}}


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    server.create(NAMESPACES, None, {"metadata": {"name": "ns"}})
    yield server
    server.stop()


def test_the_same_event_has_the_same_name_and_another_another() -> None:
    name = events.event_name(BODY, "Promoted", "Alias moved.")
    assert name == events.event_name(BODY, "Promoted", "Alias moved.") and name.startswith("r.")
    assert name != events.event_name(BODY, "Promoted", "Alias moved again.")
    assert name != events.event_name({**BODY, "metadata": {**BODY["metadata"], "uid": "u-2"}}, "Promoted",
                                     "Alias moved.")  # a re-created request's Events are its own
    event = events.build_event(BODY, "Warning", "Held", "x" * 5000, "2026-12-02T00:00:00Z")
    assert len(event["message"]) == events.MESSAGE_LIMIT and event["involvedObject"]["uid"] == "u-1"


def test_an_event_posted_twice_is_created_once(api: ApiServer) -> None:
    kube = Kube(client.ApiClient(client.Configuration(host=api.api_url)), request_timeout_seconds=10.0)

    async def post_twice() -> None:
        poster = events.EventPoster(kube)
        poster(BODY, "Normal", "JobCreated", "Created Job j.")
        poster(BODY, "Normal", "JobCreated", "Created Job j.")
        poster(BODY, "Normal", "Promoted", "Alias moved.")
        await poster.close()

    try:
        asyncio.run(post_twice())
    finally:
        kube.close()
    posted: list[dict[str, Any]] = api.list(EVENTS, "ns")
    assert sorted(e["reason"] for e in posted) == ["JobCreated", "Promoted"]
    assert {e["involvedObject"]["name"] for e in posted} == {"r"}
