"""``lifecycle.subjects``: the forget list is read from its Secret or object, copied once per request
into the request's own Secret, found again, deleted only when the request owns the copy, and never
quoted in a message."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import ClusterUnavailable, SecretNotFound, SubjectsError
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import ForgetSpec
from forgetmi_operator.lifecycle import subjects
from forgetmi_trainer.storage import Objects

BODY = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 3}, "spec": {}}


class _Store:
    """A SecretStore over a dict ``{name: Secret}``; reads fail with ``failures`` first."""

    def __init__(self, secrets: dict[str, dict[str, Any]] | None = None,
                 failures: list[Exception] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str | None]] = []
        self.failures = failures or []

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.failures:
            raise self.failures.pop(0)
        return self.secrets.get(name)

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        if name in self.secrets:
            return self.secrets[name], False
        self.created.append(body)
        self.secrets[name] = body
        return body, True

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.deleted.append((namespace, name, uid))
        return self.secrets.pop(name, None) is not None


def _copy(ids: list[str]) -> dict[str, Any]:
    return subjects.build_snapshot_secret(ids, name="r", namespace="ns", uid="u-1", owner=BODY)


def _snapshot(store: _Store, ids: list[str]) -> list[str]:
    return asyncio.run(subjects.snapshot(store, BODY, ids, "Secret ns/ids key 'ids'"))


def test_the_first_launch_snapshots_the_accepted_list() -> None:
    store = _Store()
    assert _snapshot(store, ["P1", "P2"]) == ["P1", "P2"]
    (secret,) = store.created
    assert secret == _copy(["P1", "P2"])
    assert secret["immutable"] is True and secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert base64.b64decode(secret["data"]["subjects"]) == b"P1\nP2\n"
    assert secret["metadata"]["name"] == naming.subjects_secret_name("r", "u-1")


def test_a_retried_launch_keeps_the_list_snapshotted_first() -> None:
    """An operator restart between the snapshot and the Job: the list edited meanwhile is not used."""
    store = _Store({naming.subjects_secret_name("r", "u-1"): _copy(["P1", "P2"])})
    assert _snapshot(store, ["P1", "P2", "P3"]) == ["P1", "P2"]
    assert not store.created


def test_a_secret_of_that_name_another_owner_made_is_refused() -> None:
    name = naming.subjects_secret_name("r", "u-1")
    foreign = _copy(["P9"])
    foreign["metadata"]["ownerReferences"] = []
    with pytest.raises(SubjectsError, match=r"Secret ns/forgetmi-r-u1\w*-subjects exists but is not owned by this "
                                            r"UnlearnRequest"):
        _snapshot(_Store({name: foreign}), ["P1"])
    broken = _copy(["P1"])
    broken["data"] = {}
    with pytest.raises(SubjectsError, match=r"has no key 'subjects'"):
        _snapshot(_Store({name: broken}), ["P1"])


def test_a_list_larger_than_a_secret_holds_is_refused_naming_its_source() -> None:
    ids = [f"P{i:09d}" for i in range(subjects.MAX_SUBJECTS_BYTES // 11 + 1)]
    with pytest.raises(SubjectsError, match=r"The forget list in Secret ns/ids key 'ids' takes \d+ bytes"):
        _snapshot(_Store(), ids)


def test_the_referenced_secret_is_read_by_key_and_never_quoted() -> None:
    spec_ref = {"name": "ids", "data": {"list": base64.b64encode(b"P1\nP2\n# a comment\nP1\n").decode()}}
    store = _Store({"ids": spec_ref})
    assert asyncio.run(subjects.read_secret_key(store, "ns", "ids", "list")) == b"P1\nP2\n# a comment\nP1\n"
    assert subjects.parse("P1\nP2\n# a comment\nP1\n", "here") == ["P1", "P2"]
    with pytest.raises(SecretNotFound, match=r"Secret ns/ids has no key 'other'"):
        asyncio.run(subjects.read_secret_key(store, "ns", "ids", "other"))
    with pytest.raises(SecretNotFound, match=r"Secret ns/gone does not exist"):
        asyncio.run(subjects.read_secret_key(store, "ns", "gone", "list"))
    with pytest.raises(SubjectsError) as err:
        subjects.parse("P1\nP 2 with spaces\n", "Secret ns/ids key 'list'")
    assert "P 2" not in err.value.message and "Secret ns/ids key 'list'" in err.value.message
    with pytest.raises(SubjectsError, match="list no patient"):
        subjects.parse("# only a comment\n", "here")


def test_a_gone_copy_cannot_be_attested() -> None:
    with pytest.raises(SubjectsError, match=r"\(the forget list as accepted\) is gone, so the receipt could not "
                                            r"attest what was forgotten"):
        asyncio.run(subjects.read_snapshot(_Store(), BODY))


def _release(store: _Store) -> _Store:
    asyncio.run(subjects.release(store, BODY))
    return store


def test_the_forget_list_copy_is_deleted_only_if_the_request_owns_it(caplog: pytest.LogCaptureFixture) -> None:
    name = naming.subjects_secret_name("r", "u-1")
    ours = _copy(["P1"])
    ours["metadata"]["uid"] = "secret-uid-7"
    # deleted with a precondition on the Secret's own uid: a Secret re-created meanwhile stays
    assert _release(_Store({name: ours})).deleted == [("ns", name, "secret-uid-7")]
    assert _release(_Store()).deleted == []
    foreign = _copy(["P1"])
    foreign["metadata"]["ownerReferences"] = []
    with caplog.at_level(logging.WARNING):
        assert _release(_Store({name: foreign})).deleted == []
    assert f"Secret ns/{name} is not owned by" in caplog.text


def test_deleting_the_copy_is_tried_again_on_a_retryable_error(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(subjects, "RELEASE_RETRY_SECONDS", 0.0)
    name = naming.subjects_secret_name("r", "u-1")
    unavailable = ClusterUnavailable("The API server could not be reached to read Secret ns/x.")
    assert len(_release(_Store({name: _copy(["P1"])}, [unavailable, unavailable])).deleted) == 1
    with caplog.at_level(logging.WARNING):
        assert _release(_Store({name: _copy(["P1"])}, [unavailable] * 3)).deleted == []
    assert "is left to garbage collection" in caplog.text


def test_the_receipt_key_is_read_from_the_operator_namespace_when_configured() -> None:
    store = _Store({"hmac": {"data": {"key": base64.b64encode(b"k3y\n").decode()}}})
    assert asyncio.run(subjects.receipt_key(store, Settings())) is None
    configured = Settings(receipt_hmac_secret_name="hmac", operator_namespace="forgetmi-system")
    assert asyncio.run(subjects.receipt_key(store, configured)) == b"k3y\n"
    with pytest.raises(SecretNotFound, match="FORGETMI_OPERATOR_NAMESPACE is empty"):
        asyncio.run(subjects.receipt_key(store, Settings(receipt_hmac_secret_name="hmac")))


class _NoWholeReads(Objects):
    """A storage handle on which reading a whole object fails the test."""

    def read_bytes(self, uri: str) -> bytes:
        raise AssertionError(f"the whole of {uri} was read")


def _uri_spec(uri: str) -> ForgetSpec:
    return ForgetSpec.model_validate({"subjectsUri": uri})


def test_a_forget_list_object_is_read_up_to_its_limit_and_refused_beyond_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``spec.forget.subjectsUri`` is read with a bounded read: an object larger than the list the
    operator reads is SubjectsError, and never held whole in memory."""
    monkeypatch.setattr(subjects, "MAX_LIST_FILE_BYTES", 16)
    path = tmp_path / "ids.txt"
    path.write_text("# two patients\nP001\nP002\n")  # 25 bytes
    with pytest.raises(SubjectsError, match=r"ids\.txt is larger than 16 bytes, more than the operator reads of a "
                                            r"forget list: split it into several requests\.$"):
        subjects.read_uri(_NoWholeReads(), _uri_spec(path.as_uri()))
    path.write_text("P001\nP002\n")
    assert subjects.read_uri(_NoWholeReads(), _uri_spec(path.as_uri())) == "P001\nP002\n"
    assert subjects.MAX_LIST_FILE_BYTES == 16 and 8 * subjects.MAX_SUBJECTS_BYTES == 8 * 1024 * 1024
