"""The ``scrub`` baseline on a tiny trained original."""

from __future__ import annotations

import copy
from typing import Any

import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.methods.base import UnlearnInputs, freeze, mean_image_loss
from forgetmi_trainer.methods.scrub import distill_kl
from forgetmi_trainer.model import MultimodalClassifier

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)


@torch.no_grad()
def _forget_kl(student: MultimodalClassifier, teacher: MultimodalClassifier, data: UnlearnInputs) -> float:
    return float(distill_kl(student.eval(), freeze(copy.deepcopy(teacher)), data.forget, 1.0))


def test_scrub_max_steps_move_the_student_away_on_forget_data(world: MethodWorld) -> None:
    """Against the same run without max steps (msteps = 0), the max steps raise the student's
    KL from the teacher on the forget set, and the forget loss."""
    options = {"msteps": 2.0, "retain_steps": 2.0}
    method = MethodConfig(name="scrub", epochs=2, learning_rate=3e-3, batch_size=16, options=options)
    scrub = world.run(method)
    min_only = world.run(method.model_copy(update={"options": {**options, "msteps": 0.0}}))
    original, inputs = world.original, world.inputs
    assert _forget_kl(scrub.model, original, inputs) > 2 * _forget_kl(min_only.model, original, inputs)
    assert mean_image_loss(scrub.model, world.inputs.forget) > mean_image_loss(min_only.model, world.inputs.forget)


@torch.no_grad()
def test_distill_kl_is_zero_for_the_teacher_itself_and_positive_otherwise(world: MethodWorld) -> None:
    teacher = freeze(copy.deepcopy(world.original))
    batch = world.inputs.forget.take(torch.arange(8))
    assert abs(float(distill_kl(teacher, teacher, batch, 4.0))) < 1e-5
    other = copy.deepcopy(teacher)
    for p in other.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    assert float(distill_kl(other, teacher, batch, 4.0)) > 1e-3


def test_forget_reaches_test_stops_scrub_at_the_first_crossing(world: MethodWorld) -> None:
    """Max steps in every epoch (msteps beyond epochs) push the forget loss up to the test loss."""
    method = MethodConfig(
        name="scrub",
        epochs=8,
        learning_rate=3e-3,
        batch_size=16,
        options={"msteps": 10, "retain_steps": 2},
        selection=SelectionRule(rule="ForgetReachesTest"),
    )
    result = world.run(method)
    world.check_first_crossing(result, method.epochs)
