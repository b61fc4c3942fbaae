"""``api.spec`` and ``api.method``: the operator reads a spec naming every bad field, and a method's
``options`` and ``sign`` apply only to the methods that read them."""

from __future__ import annotations

from typing import Any

import pytest

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.method import METHOD_OPTIONS, MethodOptionsSpec, options_message
from forgetmi_operator.api.patterns import DNS_LABEL, pattern_message
from forgetmi_operator.api.spec import parse_spec

SPEC = {"model": {"registryUri": "s3://bucket/registry", "name": "m"}, "data": {"manifestUri": "s3://bucket/m.csv"},
        "forget": {"subjectsUri": "s3://bucket/s.txt"}}


def _spec(method: dict[str, Any]) -> dict[str, Any]:
    return {**SPEC, "method": method}


def test_parse_spec_names_every_bad_field() -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec({**SPEC, "model": {"registryUri": "http://x", "name": "m"}, "method": {"epochs": 0}})
    assert "spec.model.registryUri" in err.value.message and "spec.method.epochs" in err.value.message


@pytest.mark.parametrize("name", sorted(METHOD_OPTIONS))
def test_each_method_takes_exactly_its_options(name: str) -> None:
    values = {"alignWeight": 0.2, "weightDecay": 0.02, "alpha": 0.5, "bound": 3.0, "msteps": 2, "gamma": 0.9,
              "temperature": 2.0, "retainSteps": 4}
    fields = {info.alias: field for field, info in MethodOptionsSpec.model_fields.items()}
    assert set(values) == set(fields)
    for key, value in values.items():
        if key in METHOD_OPTIONS[name]:
            spec = parse_spec(_spec({"name": name, "options": {key: value}}))
            assert spec.method.options.trainer_options() == {fields[key]: float(value)}
        else:
            with pytest.raises(InvalidSpec) as err:
                parse_spec(_spec({"name": name, "options": {key: value}}))
            assert f"spec.method.options.{key}: {options_message(key)}" in err.value.message


def test_options_are_bounded_and_unknown_ones_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.method\.options\.alpha: Input should be less than or equal to 1"):
        parse_spec(_spec({"name": "neggrad-plus", "options": {"alpha": 1.5}}))
    with pytest.raises(InvalidSpec, match=r"spec\.method\.options\.msteps: Input should be a valid integer"):
        parse_spec(_spec({"name": "scrub", "options": {"msteps": 2.5}}))
    with pytest.raises(InvalidSpec, match=r"spec\.method\.options\.beta: Extra inputs are not permitted"):
        parse_spec(_spec({"name": "scrub", "options": {"beta": 1.0}}))


def test_sign_pull_is_a_forget_mi_negative_control_only() -> None:
    assert parse_spec(_spec({"sign": "pull"})).method.sign == "pull"
    with pytest.raises(InvalidSpec, match=r"spec\.method\.sign: sign applies only to method forget-mi"):
        parse_spec(_spec({"name": "finetune", "sign": "pull"}))


def _invalid(spec: dict[str, Any]) -> str:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec)
    return err.value.message


@pytest.mark.parametrize("name", ["x.y..z", "a.-b", "a-.b", ".a", "a.", "a..b"])
def test_a_dns_subdomain_has_no_empty_label_and_each_label_starts_and_ends_alphanumeric(name: str) -> None:
    message = _invalid({**SPEC, "serviceAccountName": name})
    assert message.startswith("The spec is invalid: spec.serviceAccountName: must be a lowercase DNS subdomain")


@pytest.mark.parametrize("name", ["a", "a.b.c", "a-b.c-d", "x" * 63 + ".y", "0.1"])
def test_a_dns_subdomain_of_labels_is_accepted(name: str) -> None:
    assert parse_spec({**SPEC, "serviceAccountName": name}).service_account_name == name


@pytest.mark.parametrize("quantity", [-1, "-1", "-1Gi", "-0.5", "-1e3"])
def test_a_negative_quantity_is_refused(quantity: Any) -> None:
    message = _invalid({**SPEC, "resources": {"limits": {"memory": quantity}}})
    assert message.startswith("The spec is invalid: spec.resources.limits.memory: must be a resource quantity")


@pytest.mark.parametrize("quantity", [0, 4, "+1Gi", "500m", "1e3", ".5", "16Gi"])
def test_a_quantity_that_is_not_negative_is_accepted(quantity: Any) -> None:
    assert parse_spec({**SPEC, "resources": {"requests": {"memory": quantity}}}).resources.requests["memory"] == \
        str(quantity)


@pytest.mark.parametrize(("spec", "expected"), [
    ({**SPEC, "model": {"registryUri": "http://x", "name": "m"}},
     "spec.model.registryUri: must be an s3://bucket/... or file:///... URI"),
    ({**SPEC, "model": {"registryUri": "s3://bucket/registry", "name": "M_1"}},
     "spec.model.name: must be a lowercase DNS label"),
    ({**SPEC, "forget": {"subjectsUri": "s3://bucket/s.txt", "sha256": "ABC"}},
     "spec.forget.sha256: must be a sha256 digest (64 lowercase hex digits)"),
    ({**SPEC, "image": "bad image"}, "spec.image: must be an image reference"),
])
def test_an_invalid_spec_says_what_the_field_must_be_never_the_pattern(spec: dict[str, Any], expected: str) -> None:
    message = _invalid(spec)
    assert expected in message
    assert "pattern" not in message and "^" not in message


def test_a_pattern_without_a_sentence_has_an_invalid_format() -> None:
    assert pattern_message(r"^[a-z]+$") == "has an invalid format"
    assert pattern_message(DNS_LABEL).startswith("must be a lowercase DNS label")
