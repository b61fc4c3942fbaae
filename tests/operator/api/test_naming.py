"""naming: deterministic, DNS-safe names and the labels of a request's objects."""

from __future__ import annotations

import re

import pytest

from forgetmi_operator.api import naming

UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_job_name_is_prefix_name_and_first_eight_uid_characters() -> None:
    assert naming.job_name("cxr-patient-42", UID) == "forgetmi-cxr-patient-42-0b3f9c2e"


def test_job_name_is_deterministic_and_differs_per_uid_and_kind() -> None:
    first = naming.job_name("cxr", UID)
    assert first == naming.job_name("cxr", UID)
    assert first != naming.job_name("cxr", "1" + UID[1:])
    assert naming.job_name("cxr", UID, kind="retrain") == first + "-retrain"


@pytest.mark.parametrize("name", ["a" * 253, "x.y.z", "a-" * 40 + "b", "Upper.Case"])
def test_job_name_is_always_a_dns_label(name: str) -> None:
    for kind in ("unlearn", "retrain"):
        job = naming.job_name(name, UID, kind=kind)  # type: ignore[arg-type]
        assert len(job) <= 63
        assert DNS_LABEL.fullmatch(job), job
        assert "0b3f9c2e" in job


def test_uid_without_enough_alphanumerics_is_padded_from_its_hash() -> None:
    suffix = naming.uid_suffix("a-b")
    assert len(suffix) == 8
    assert suffix.startswith("ab")
    assert suffix == naming.uid_suffix("a-b")
    assert suffix != naming.uid_suffix("a_b")


def test_an_empty_uid_is_refused() -> None:
    with pytest.raises(ValueError, match="uid is required"):
        naming.job_name("cxr", "")


def test_configmap_shares_the_job_name() -> None:
    assert naming.configmap_name("cxr", UID) == naming.job_name("cxr", UID)


def test_candidate_version_appends_kind_and_uid() -> None:
    assert naming.candidate_version("v3", UID) == "v3-unlearned-0b3f9c2e"
    assert naming.candidate_version("v3", UID, kind="retrain") == "v3-retrained-0b3f9c2e"
    long = naming.candidate_version("v" * 200, UID)
    assert len(long) == 128
    assert long.endswith("-unlearned-0b3f9c2e")


def test_candidate_version_refuses_a_base_that_leaves_nothing() -> None:
    with pytest.raises(ValueError, match="cannot name a candidate version"):
        naming.candidate_version("---", UID)


def test_labels_carry_app_request_and_queue_only_when_set() -> None:
    labels = naming.labels_for("cxr", uid=UID)
    assert labels == {
        "app.kubernetes.io/name": "forgetmi-trainer",
        "app.kubernetes.io/managed-by": "forgetmi-operator",
        "app.kubernetes.io/part-of": "forgetmi",
        "app.kubernetes.io/component": "unlearn",
        "unlearning.forgetmi.io/request": "cxr",
        "unlearning.forgetmi.io/request-uid": UID,
    }
    queued = naming.labels_for("cxr", "gpu-queue", uid=UID, kind="retrain")
    assert queued["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert queued["app.kubernetes.io/component"] == "retrain"


def test_long_request_names_become_valid_label_values() -> None:
    name = "a" * 60 + "." + "b" * 100
    value = naming.request_label_value(name)
    assert len(value) <= 63
    assert re.fullmatch(naming.LABEL_VALUE_PATTERN, value)
    assert value != naming.request_label_value("a" * 60 + "." + "c" * 100)
    assert naming.request_label_value("short") == "short"


def test_a_uid_that_is_not_a_label_value_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid label value"):
        naming.labels_for("cxr", uid="bad uid/with spaces")


def test_a_job_name_says_which_run_of_the_request_it_is() -> None:
    assert naming.job_kind("r", UID, naming.job_name("r", UID, kind="retrain")) == "retrain"
    assert naming.job_kind("r", UID, naming.job_name("r", UID)) == "unlearn"
    assert naming.job_kind("r", UID, "someone-elses-job") == "unlearn"


def test_a_shortened_trainjob_name_still_says_which_run_it_is() -> None:
    """A TrainJob keeps less of a long request's name (JobSet's Pod names must fit 63 characters)."""
    from forgetmi_operator.cluster.trainjobs import trainjob_name

    long = "r" * 253
    retrain, unlearn = trainjob_name(long, UID, kind="retrain"), trainjob_name(long, UID)
    assert retrain != naming.job_name(long, UID, kind="retrain")
    assert naming.job_kind(long, UID, retrain) == "retrain"
    assert naming.job_kind(long, UID, unlearn) == "unlearn"


def test_a_rebased_run_has_names_of_its_own_and_its_job_name_says_which_rebase_it_is() -> None:
    first, third = naming.job_name("r", UID), naming.job_name("r", UID, rebase=3)
    assert third == f"{first}-b3" and naming.job_name("r", UID, kind="retrain", rebase=3) == f"{first}-b3-retrain"
    for kind in ("unlearn", "retrain"):
        for rebase in (0, 1, 12):
            job = naming.job_name("r", UID, kind=kind, rebase=rebase)
            assert naming.job_run("r", UID, job) == (kind, rebase)
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job) and len(job) <= 63
    assert naming.job_run("r" * 253, UID, naming.job_name("r" * 253, UID, kind="retrain", rebase=7)) == ("retrain", 7)
    assert naming.candidate_version("v7", UID, rebase=2) == f"{naming.candidate_version('v7', UID)}-b2"
    assert naming.subjects_secret_name("r", UID, rebase=2) == f"{third[:-1]}2-subjects"
    assert naming.subjects_secret_name("r", UID) == f"{first}-subjects"  # the attested copy keeps its name
    with pytest.raises(ValueError, match="rebase count"):
        naming.job_name("r", UID, rebase=-1)


def test_a_request_is_described_by_namespace_and_name() -> None:
    assert naming.describe({"metadata": {"namespace": "radiology", "name": "r1"}}) == "UnlearnRequest radiology/r1"


def test_the_owner_reference_names_the_request_as_controller() -> None:
    body = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
            "metadata": {"name": "r1", "uid": UID, "namespace": "ns"}}
    ref = naming.owner_reference(body)
    assert ref == {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "name": "r1",
                   "uid": UID, "controller": True, "blockOwnerDeletion": True}
    assert naming.owner_reference({"name": "r1", "uid": UID}) == ref
    assert naming.owned_by({"metadata": {"ownerReferences": [ref]}}, UID)
    assert not naming.owned_by({"metadata": {"ownerReferences": [ref]}}, "another-uid")
    assert not naming.owned_by({"metadata": {}}, UID)
