"""``api.spec`` and ``api.method``: the operator reads a spec naming every bad field, and a method's
``options`` and ``sign`` apply only to the methods that read them."""

from __future__ import annotations

from typing import Any

import pytest

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.method import METHOD_OPTIONS, MethodOptionsSpec, options_message
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
