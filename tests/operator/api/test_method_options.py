"""``spec.method.options`` mirrors the trainer's options models: every method reads exactly the
options the API lets a request give it, with the same types, bounds and (documented) defaults."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from forgetmi_operator.api.method import METHOD_OPTIONS, MethodOptionsSpec
from forgetmi_operator.local.crd import openapi_schema
from forgetmi_trainer.contract import MethodConfig
from forgetmi_trainer.methods import OPTIONS

API_FIELDS = {str(info.alias): info for info in MethodOptionsSpec.model_fields.values()}
CRD_OPTIONS = openapi_schema()["properties"]["spec"]["properties"]["method"]["properties"]["options"]["properties"]


def _bounds(info: FieldInfo) -> dict[str, Any]:
    found = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _type(info: FieldInfo) -> type:
    annotation = info.annotation
    args = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
    (kind,) = args
    return kind


def test_the_api_names_every_method_the_trainer_has() -> None:
    assert set(METHOD_OPTIONS) == set(OPTIONS) == set(MethodConfig.model_fields["name"].annotation.__args__)


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_each_method_takes_the_options_its_trainer_model_declares(method: str) -> None:
    assert set(METHOD_OPTIONS[method]) == {to_camel(field) for field in OPTIONS[method].model_fields}


@pytest.mark.parametrize("key", sorted(API_FIELDS))
def test_an_option_has_the_trainers_type_and_bounds_and_documents_each_default(key: str) -> None:
    api = API_FIELDS[key]
    readers = [name for name, keys in METHOD_OPTIONS.items() if key in keys]
    assert readers, f"options.{key} is read by no method"
    for method in readers:
        trainer = OPTIONS[method].model_fields[next(f for f in OPTIONS[method].model_fields if to_camel(f) == key)]
        assert _type(api) is _type(trainer), (key, method)
        assert _bounds(api) == _bounds(trainer), (key, method)
        assert f"default {format(trainer.default, 'g')})" in str(api.description), (key, method)
    crd = CRD_OPTIONS[key]
    assert crd["type"] == ("integer" if _type(api) is int else "number")
    bounds = _bounds(api)
    assert crd.get("minimum") == bounds.get("ge", bounds.get("gt"))
    assert bool(crd.get("exclusiveMinimum")) == ("gt" in bounds)
    assert crd.get("maximum") == bounds.get("le")
    for method in readers:
        assert method in " ".join(crd["description"].split()), (key, method)
