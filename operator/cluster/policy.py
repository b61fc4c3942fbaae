"""The cluster admin's pod policy: what a request may name for its trainer Pods.

Whoever may create an UnlearnRequest must not gain the operator's powers through the Job it builds,
so a request may name only what the cluster admin allows in the chart (``trainer.allowed*``, read
as :class:`~forgetmi_operator.api.settings.Settings` fields ``trainer_allowed_*``):

- ``spec.image``: ``trainer_image`` or one of ``trainer_allowed_images``, compared exactly (a tag or
  a digest, never a pattern);
- ``spec.serviceAccountName`` and ``spec.priorityClassName``: one of the allowed names (none by
  default: the Pods run as ``trainer_service_account``, without a priority class);
- each of ``spec.tolerations``: equal to one allowed toleration once ``operator`` is defaulted to
  ``Equal`` as Kubernetes does (none by default: the settings' ``trainer_tolerations`` apply);
- ``spec.runtimeRef``: the default runtime ``trainjob_runtime`` or one of ``allowed_runtimes``
  (a ClusterTrainingRuntime by name, a TrainingRuntime as ``TrainingRuntime/<name>``): the runtime
  is the TrainJob's pod template, so it is the admin's to choose;
- ``spec.priorityClassName`` only for a ``batch/v1`` Job: a TrainJob cannot carry one (Kubeflow
  Trainer v2.3's runtimePatches have no such field), so the admin's runtime decides.

:func:`check_pod_policy` is pure; :mod:`~forgetmi_operator.cluster.launcher` calls it before a
request is accepted, so a forbidden request is Accepted=False and nothing is created. The chart's
ValidatingAdmissionPolicy refuses the same requests at admission. ``forgetmi run`` (one machine, the
user's own powers) has no such policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from forgetmi_operator.api.errors import PolicyViolation
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import RuntimeRef, Toleration, UnlearnRequestSpec
from forgetmi_operator.cluster.trainjobs import engine_of

TolerationKey = tuple[str, str, str, str, int | None]


def allowed_images(settings: Settings) -> list[str]:
    """The images a request may name: the default image first, then the allowed ones."""
    return list(dict.fromkeys([settings.trainer_image, *settings.trainer_allowed_images]))


def toleration_key(toleration: Toleration) -> TolerationKey:
    """A toleration as Kubernetes compares it: no key is the empty key, no operator is ``Equal``."""
    return (toleration.key or "", toleration.operator or "Equal", toleration.value or "", toleration.effect or "",
            toleration.toleration_seconds)


def describe_toleration(toleration: Toleration) -> str:
    """``{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}`` (operator defaulted)."""
    key, operator, value, effect, seconds = toleration_key(toleration)
    shown = {"key": key, "operator": operator, "value": value, "effect": effect,
             "tolerationSeconds": "" if seconds is None else str(seconds)}
    return "{" + ", ".join(f"{name}: {text}" for name, text in shown.items() if text) + "}"


def allowed_runtimes(settings: Settings) -> list[str]:
    """The runtimes a request may name: the default ClusterTrainingRuntime first, then the allowed ones."""
    return list(dict.fromkeys([settings.trainjob_runtime, *settings.allowed_runtimes]))


def runtime_entry(ref: RuntimeRef) -> str:
    """``torch-distributed`` for a ClusterTrainingRuntime, ``TrainingRuntime/<name>`` for a namespace's."""
    return ref.name if ref.kind == "ClusterTrainingRuntime" else f"TrainingRuntime/{ref.name}"


def _refusal(field: str, value: str, allowed: Sequence[str], chart_value: str) -> PolicyViolation:
    return PolicyViolation(f"{field} {value} is not allowed; the cluster admin allows "
                           f"{', '.join(allowed) or 'none'} (chart value {chart_value}).")


def check_pod_policy(spec: UnlearnRequestSpec, settings: Settings) -> None:
    """Raise :class:`PolicyViolation` naming the first field of ``spec`` the pod policy does not allow."""
    images = allowed_images(settings)
    if spec.image is not None and spec.image not in images:
        raise _refusal("spec.image", spec.image, images, "trainer.allowedImages")
    accounts = settings.trainer_allowed_service_accounts
    if spec.service_account_name is not None and spec.service_account_name not in accounts:
        raise _refusal("spec.serviceAccountName", spec.service_account_name, accounts,
                       "trainer.allowedServiceAccounts")
    classes = settings.trainer_allowed_priority_classes
    if spec.priority_class_name is not None and spec.priority_class_name not in classes:
        raise _refusal("spec.priorityClassName", spec.priority_class_name, classes, "trainer.allowedPriorityClasses")
    _check_trainjob(spec, settings)
    allowed = {toleration_key(t) for t in settings.trainer_allowed_tolerations}
    for index, toleration in enumerate(spec.tolerations):
        if toleration_key(toleration) not in allowed:
            raise _refusal(f"spec.tolerations[{index}]", describe_toleration(toleration),
                           [describe_toleration(t) for t in settings.trainer_allowed_tolerations],
                           "trainer.allowedTolerations")


def _check_trainjob(spec: UnlearnRequestSpec, settings: Settings) -> None:
    runtimes = allowed_runtimes(settings)
    if spec.runtime_ref is not None and runtime_entry(spec.runtime_ref) not in runtimes:
        raise PolicyViolation(f"spec.runtimeRef.name {spec.runtime_ref.name} ({spec.runtime_ref.kind}) is not "
                              f"allowed; the cluster admin allows {', '.join(runtimes)} (chart value "
                              "trainJob.allowedRuntimes, besides trainJob.runtime).")
    if spec.priority_class_name is not None and engine_of(spec) == "TrainJob":
        raise PolicyViolation(f"spec.priorityClassName {spec.priority_class_name} cannot be set on a TrainJob "
                              "(Kubeflow Trainer v2.3 has no such patch); use a runtime that sets it "
                              "(spec.runtimeRef) or run on one process (resources.nodes and processesPerNode 1).")
