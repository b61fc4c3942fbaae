"""The registry of methods and their options models: every method by name, its options with the
defaults it used before options had models, and refusals that name ``method.options.<key>``."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest

from forgetmi_trainer.contract import MethodConfig, MethodName, SelectionRule
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.methods import METHODS, OPTIONS, MethodOptions, get_method
from forgetmi_trainer.methods.base import read_options
from forgetmi_trainer.train import TrainConfig

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "methods.md"

# What each method read before it had an options model (its DEFAULTS dict; retrain: TrainConfig's).
FORMER_DEFAULTS: dict[str, dict[str, float]] = {
    "forget-mi": {},
    "retrain": {"align_weight": 0.1, "weight_decay": 0.01},
    "finetune": {"align_weight": 0.1, "weight_decay": 0.01},
    # bound: 5 nats before it was relative to ln C (chance); 3.6 · ln 4 ≈ 5.0
    "neggrad-plus": {"alpha": 0.9, "bound": 3.6, "align_weight": 0.1, "weight_decay": 0.01},
    "scrub": {
        "msteps": 3,
        "alpha": 0.001,
        "gamma": 0.99,
        "temperature": 4.0,
        "retain_steps": 0,
        "align_weight": 0.1,
        "weight_decay": 0.01,
    },
}
OUT_OF_RANGE = [
    ("retrain", "align_weight", -0.1),
    ("retrain", "weight_decay", -0.01),
    ("finetune", "align_weight", -1.0),
    ("finetune", "weight_decay", -0.5),
    ("neggrad-plus", "alpha", 1.5),
    ("neggrad-plus", "alpha", -0.1),
    ("neggrad-plus", "bound", -1.0),
    ("scrub", "msteps", -1.0),
    ("scrub", "msteps", 2.5),
    ("scrub", "retain_steps", -2.0),
    ("scrub", "temperature", 0.0),
    ("scrub", "gamma", -0.1),
    ("scrub", "alpha", -0.001),
]


def test_registry_has_every_method_of_the_contract_and_rejects_unknown_names() -> None:
    assert set(METHODS) == set(OPTIONS) == set(typing.get_args(MethodName))
    for name, method in METHODS.items():
        assert get_method(name) is method.run
        assert issubclass(OPTIONS[name], MethodOptions)
    with pytest.raises(ConfigError, match=r"method\.name 'cf-k' is not available in this trainer"):
        get_method("cf-k")


@pytest.mark.parametrize("name", sorted(FORMER_DEFAULTS))
def test_options_defaults_are_what_the_method_used_before(name: str) -> None:
    defaults = read_options(MethodConfig(name=name), OPTIONS[name])  # type: ignore[arg-type]
    assert defaults.model_dump() == FORMER_DEFAULTS[name]
    assert all(field.description for field in OPTIONS[name].model_fields.values())


def test_retrain_defaults_are_the_training_recipes() -> None:
    recipe = TrainConfig()
    expected = {"align_weight": recipe.align_weight, "weight_decay": recipe.weight_decay}
    assert OPTIONS["retrain"]().model_dump() == expected


@pytest.mark.parametrize("name", sorted(FORMER_DEFAULTS))
def test_an_unknown_option_is_a_config_error_naming_the_key(name: str) -> None:
    method = MethodConfig(name=name, options={"typo": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"method\.options\.typo: Extra inputs are not permitted") as info:
        read_options(method, OPTIONS[name])
    assert str(info.value).startswith(f"The options of method {name} are invalid: ")
    assert all(key in str(info.value) for key in OPTIONS[name].model_fields)


@pytest.mark.parametrize(("name", "key", "value"), OUT_OF_RANGE)
def test_an_out_of_range_option_is_a_config_error_naming_the_key(name: str, key: str, value: float) -> None:
    method = MethodConfig(name=name, options={key: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"method\.options\.{key}: ") as info:
        read_options(method, OPTIONS[name])
    assert str(info.value).count("method.options.") == 1


def test_options_are_read_as_typed_values() -> None:
    opts = read_options(MethodConfig(name="scrub", options={"msteps": 2.0, "alpha": 0.5}), OPTIONS["scrub"])
    assert opts.model_dump()["msteps"] == 2 and isinstance(opts.model_dump()["msteps"], int)
    assert opts.model_dump()["alpha"] == 0.5 and opts.model_dump()["gamma"] == 0.99


@pytest.mark.parametrize("name", sorted(FORMER_DEFAULTS))
def test_run_functions_refuse_bad_options_and_a_late_fixed_epoch(world: MethodWorld, name: str) -> None:
    """Each run function reads its options and the epochs to run before it trains anything."""
    with pytest.raises(ConfigError, match=r"method\.options\.typo"):
        world.run(MethodConfig(name=name, epochs=1, options={"typo": 1.0}))  # type: ignore[arg-type]
    if name != "retrain":  # retrain always runs method.epochs (FixedEpoch, last)
        with pytest.raises(ConfigError, match=r"method\.selection\.epoch \(2\) exceeds method\.epochs \(1\)"):
            world.run(MethodConfig(name=name, epochs=1, selection=SelectionRule(epoch=2)))  # type: ignore[arg-type]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


@pytest.mark.parametrize("name", sorted(FORMER_DEFAULTS))
def test_docs_list_every_option_of_the_method_with_its_default(name: str) -> None:
    """docs/methods.md has a section per method whose table names each option in camelCase (as a
    request writes it) with its default."""
    sections = re.split(r"^## ", DOCS.read_text(), flags=re.MULTILINE)
    section = next(s for s in sections if s.startswith(f"`{name}`"))
    for key, field in OPTIONS[name].model_fields.items():
        row = re.search(rf"^\| `{_camel(key)}` \| ([^|]+) \|", section, flags=re.MULTILINE)
        assert row is not None, f"{name}: {_camel(key)} is not in docs/methods.md"
        assert float(row.group(1)) == field.default, (name, key)
