"""The trainer container's resources: the operator's defaults, overridden key by key by the request's.

Its ``resources.gpus``, when set, replaces ``FORGETMI_TRAINER_GPUS`` (the API server fills in the
CRD's default ``gpus: 1``, so in a cluster the setting applies only to requests that reach the
operator without defaulting).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.patterns import GPU_RESOURCE
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec

_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity_value(quantity: str) -> Decimal:
    """A Kubernetes quantity (``500m``, ``16Gi``, ``1e3``) as a number, to compare requests and limits."""
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]{0,2}|[eE][+-]?[0-9.]+)", quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        if suffix in _BINARY_SUFFIX:
            return Decimal(number) * _BINARY_SUFFIX[suffix]
        if suffix in _DECIMAL_SUFFIX:
            return Decimal(number).scaleb(_DECIMAL_SUFFIX[suffix])
        return Decimal(quantity)
    except InvalidOperation as err:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity") from err


def container_resources(spec: UnlearnRequestSpec, settings: Settings) -> dict[str, dict[str, str]]:
    """Settings' requests/limits overridden key by key by the spec's, plus ``nvidia.com/gpu`` (requested
    and limited alike) when GPUs > 0; raises :class:`InvalidSpec` when a request exceeds its limit."""
    requests = {**settings.trainer_resources.requests, **spec.resources.requests}
    limits = {**settings.trainer_resources.limits, **spec.resources.limits}
    gpus = spec.resources.gpus if "gpus" in spec.resources.model_fields_set else settings.trainer_gpus
    if gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    for key in sorted(requests.keys() & limits.keys()):
        if quantity_value(requests[key]) > quantity_value(limits[key]):
            raise InvalidSpec(f"The trainer's {key} request {requests[key]} exceeds its limit {limits[key]} "
                              "(spec.resources merged over the operator's defaults).")
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources
