"""errors: domain errors carry a CamelCase condition reason, a sentence, and whether to retry."""

from __future__ import annotations

import re

import pytest

from forgetmi_operator.api import errors
from forgetmi_operator.api.patterns import CONDITION_REASON_PATTERN

ERROR_CLASSES = [cls for cls in vars(errors).values()
                 if isinstance(cls, type) and issubclass(cls, errors.OperatorError)]


def test_every_error_kind_is_found() -> None:
    assert len(ERROR_CLASSES) >= 12


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_reason_is_a_valid_condition_reason(cls: type[errors.OperatorError]) -> None:
    assert re.fullmatch(CONDITION_REASON_PATTERN, cls.reason)


def test_reasons_are_distinct() -> None:
    reasons = [cls.reason for cls in ERROR_CLASSES]
    assert len(reasons) == len(set(reasons))


def test_message_and_reason() -> None:
    err = errors.SecretNotFound("Secret radiology/subjects does not exist.")
    assert str(err) == err.message == "Secret radiology/subjects does not exist."
    assert err.reason == "SecretNotFound"
    assert not err.retryable
    assert isinstance(err, errors.OperatorError)


def test_a_specific_reason_overrides_the_class_reason_for_that_error_only() -> None:
    err = errors.JobFailed("The image cannot be pulled.", reason="ImagePullBackOff")
    assert err.reason == "ImagePullBackOff"
    assert errors.JobFailed("x").reason == "JobFailed"


def test_a_reason_that_is_not_camel_case_is_refused() -> None:
    with pytest.raises(ValueError, match="not CamelCase"):
        errors.JobFailed("x", reason="image pull back-off")


def test_only_an_unreachable_cluster_or_registry_is_retryable() -> None:
    assert sorted(cls.__name__ for cls in ERROR_CLASSES if cls.retryable) == ["ClusterUnavailable",
                                                                                 "RegistryUnavailable"]

