"""The ``finetune`` baseline on a tiny trained original."""

from __future__ import annotations

from typing import Any

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.methods.base import mean_image_loss

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)


def test_finetune_keeps_retain_loss_low_and_reports_progress(world: MethodWorld) -> None:
    seen: list[tuple[int, int, float]] = []
    method = MethodConfig(name="finetune", epochs=2, learning_rate=1e-3, batch_size=32)
    result = world.run(method, on_epoch=lambda e, n, loss: seen.append((e, n, loss)))
    assert [(e, n) for e, n, _ in seen] == [(1, 2), (2, 2)]
    assert [loss for _, _, loss in seen] == [h["loss"] for h in result.history]
    assert result.selection.epochs_run == 2 and len(result.history) == 2
    retain = world.inputs.retain
    assert mean_image_loss(result.model, retain) <= mean_image_loss(world.original, retain) + 0.05


def test_fixed_epoch_selection_runs_that_many_epochs(world: MethodWorld) -> None:
    method = MethodConfig(name="finetune", epochs=5, batch_size=32, selection=SelectionRule(epoch=2))
    result = world.run(method)
    assert (result.selection.epoch, result.selection.epochs_run) == (2, 2)
    assert len(result.history) == 2


def test_forget_reaches_test_stops_finetune_at_the_first_crossing(memorised_world: MethodWorld) -> None:
    """Training on retain alone overwrites what the original memorised: the forget loss climbs
    past the test loss within a few epochs, and the rule stops the run there."""
    method = MethodConfig(
        name="finetune", epochs=10, learning_rate=3e-3, batch_size=32, selection=SelectionRule(rule="ForgetReachesTest")
    )
    result = memorised_world.run(method)
    memorised_world.check_first_crossing(result, method.epochs)
