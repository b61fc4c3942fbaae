"""Unlearning methods by name: one module per method, all with the same inputs and result.

Each method is a run function ``(MethodContext) -> UnlearnResult`` and a :class:`MethodOptions`
model of its ``method.options`` (:mod:`~forgetmi_trainer.methods.base` holds what they share).
Adding a method = a module + a line in :data:`METHODS` + a name in ``contract.MethodName`` + a
test; docs/methods.md lists every method's settings and options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.methods.base import MethodContext, MethodOptions, UnlearnInputs, UnlearnResult
from forgetmi_trainer.methods.finetune import FinetuneOptions, run_finetune
from forgetmi_trainer.methods.forget_mi import ForgetMiOptions, run_forget_mi
from forgetmi_trainer.methods.neggrad_plus import NegGradPlusOptions, run_neggrad_plus
from forgetmi_trainer.methods.retrain import RetrainOptions, run_retrain
from forgetmi_trainer.methods.scrub import ScrubOptions, run_scrub

RunMethod = Callable[[MethodContext], UnlearnResult]


class Method(NamedTuple):
    """A registry entry: the run function and the model of the options it reads."""

    run: RunMethod
    options: type[MethodOptions]


METHODS: dict[str, Method] = {
    "forget-mi": Method(run_forget_mi, ForgetMiOptions),
    "retrain": Method(run_retrain, RetrainOptions),
    "finetune": Method(run_finetune, FinetuneOptions),
    "neggrad-plus": Method(run_neggrad_plus, NegGradPlusOptions),
    "scrub": Method(run_scrub, ScrubOptions),
}

OPTIONS: dict[str, type[MethodOptions]] = {name: method.options for name, method in METHODS.items()}
"""Every method's options model by method name (the operator's API mirrors them)."""


def get_method(name: str) -> RunMethod:
    """The run function of method ``name``; an unknown name is a config error."""
    if name not in METHODS:
        raise ConfigError(f"method.name {name!r} is not available in this trainer; use one of {', '.join(METHODS)}.")
    return METHODS[name].run


__all__ = [
    "METHODS", "OPTIONS", "Method", "MethodContext", "MethodOptions", "RunMethod", "UnlearnInputs", "UnlearnResult",
    "get_method",
]
