"""The fault suite's own parts, without an operator: the API fault proxy answers what it is told to and cuts
watches in an outage; the invariants find a Job created twice and a patient ID where it must not be, and
never name the ID."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from harness.apifaults import ApiFaultProxy
from harness.cluster import JOBS, NAMESPACES, SECRETS
from harness.emulator import ApiServer
from harness.invariants import api_texts, duplicate_jobs, job_creations, leaks
from harness.requests import secret

NS = "harness"


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    server.create(NAMESPACES, None, {"metadata": {"name": NS}})
    try:
        yield server
    finally:
        server.stop()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def test_the_proxy_forwards_or_answers_the_chosen_faults_and_counts_them(api: ApiServer) -> None:
    path = f"/api/v1/namespaces/{NS}/secrets"
    with ApiFaultProxy(api.api_url, fraction=0.0, seed=1) as proxy:
        assert _get(proxy.url + path)[0] == 200
        proxy.fraction, proxy.kinds = 1.0, ("429",)
        code, headers, body = _get(proxy.url + path)
        assert code == 429 and headers["Retry-After"] == "1"
        assert json.loads(body)["reason"] == "TooManyRequests"
        proxy.kinds = ("500",)
        assert _get(proxy.url + path)[0] == 500
        assert dict(proxy.counts) == {"calls": 3, "429": 1, "500": 1}


def test_a_forwarded_500_takes_effect_though_the_client_sees_an_error(api: ApiServer) -> None:
    with ApiFaultProxy(api.api_url, fraction=1.0, kinds=("forwarded-500",)) as proxy:
        request = urllib.request.Request(f"{proxy.url}/api/v1/namespaces/{NS}/secrets", method="POST",
                                         data=json.dumps(secret("made", "k", b"v")).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 500
    assert api.get(SECRETS, NS, "made") is not None


def test_an_outage_cuts_open_watches_and_refuses_new_ones_until_it_ends(api: ApiServer) -> None:
    url = f"/api/v1/namespaces/{NS}/secrets?watch=true&timeoutSeconds=30"
    received: list[bytes] = []
    ended = threading.Event()
    with ApiFaultProxy(api.api_url) as proxy:
        def watch() -> None:
            try:
                with urllib.request.urlopen(proxy.url + url, timeout=30) as stream:
                    for line in stream:
                        received.append(line)
            except OSError:
                pass
            ended.set()

        threading.Thread(target=watch, daemon=True).start()
        api.create(SECRETS, NS, secret("seen", "k", b"v"))
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received, "the watch through the proxy saw no event"
        proxy.outage(1.0)
        assert ended.wait(5), "the open watch was not cut"
        assert _get(proxy.url + url)[0] == 503
        time.sleep(1.1)
        api.create(SECRETS, NS, secret("after", "k", b"v"))
        code, _, _ = _get(proxy.url + url.replace("timeoutSeconds=30", "timeoutSeconds=1"))
        assert code == 200
        assert proxy.counts["watch-cut"] == 1 and proxy.counts["watch-refused"] == 1


def _job(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"template": {"spec": {"containers": []}}}}


def test_a_job_created_again_after_its_deletion_is_a_duplicate(api: ApiServer) -> None:
    api.create(JOBS, NS, _job("once"))
    api.create(JOBS, NS, _job("twice"))
    api.delete(JOBS, NS, "twice")
    api.create(JOBS, NS, _job("twice"))
    assert job_creations(api, NS) == {"once": 1, "twice": 2}
    assert duplicate_jobs(api, NS) == ["Job twice was created 2 times"]
    assert duplicate_jobs(api, NS, started=["once", "once"]) == ["Job twice was created 2 times",
                                                                 "the trainer of Job once was started 2 times"]


def test_the_sweep_finds_an_id_outside_the_requests_secrets_and_never_names_it(api: ApiServer) -> None:
    def plain(name: str, **meta: Any) -> dict[str, Any]:  # the ID in clear (stringData), not base64
        return {"metadata": {"name": name, **meta}, "stringData": {"subjects": "P00042"}}

    request = api.create(("unlearning.forgetmi.io", "v1alpha1", "unlearnrequests"), NS, {
        "metadata": {"name": "r"}, "spec": {"forget": {"subjectsSecretRef": {"name": "r-subjects", "key": "s"}}}})
    owner = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "name": "r",
             "uid": request["metadata"]["uid"]}
    api.create(SECRETS, NS, plain("r-subjects"))  # the list the request references
    api.create(SECRETS, NS, plain("r-copy", ownerReferences=[owner]))  # the request's own copy
    assert leaks(api_texts(api, NS), ["P00042"]) == []
    api.create(SECRETS, NS, plain("stray"))
    api.create(("", "v1", "configmaps"), NS, {"metadata": {"name": "job"}, "data": {"note": "forgot P00042"}})
    found = leaks({**api_texts(api, NS), "operator log": "Looked at P00042 and P00043"}, ["P00042", "P00043"])
    assert sorted(found) == ["api configmaps holds 1 forgotten patient ID(s)", "api secrets holds 1 forgotten "
                             "patient ID(s)", "operator log holds 2 forgotten patient ID(s)"]
    assert not any("P0004" in problem for problem in found)
