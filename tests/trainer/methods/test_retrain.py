"""The ``retrain`` method: a fresh model trained on the retain set with the method's recipe."""

from __future__ import annotations

from typing import Any

import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.model import build_model
from forgetmi_trainer.train import TrainConfig, train_model

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)


def test_retrain_is_train_model_from_scratch_on_retain_with_the_methods_recipe(world: MethodWorld) -> None:
    seen: list[tuple[int, int]] = []
    options = {"align_weight": 0.3, "weight_decay": 0.05}
    method = MethodConfig(name="retrain", epochs=2, learning_rate=2e-3, batch_size=32, options=options)
    result = world.run(method, on_epoch=lambda e, n, loss: seen.append((e, n)))
    reference = build_model(world.original.config, 0)
    recipe = TrainConfig(epochs=2, learning_rate=2e-3, batch_size=32, align_weight=0.3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    train_model(reference, world.inputs.retain, recipe, generator=generator, device=torch.device("cpu"))
    got, want = result.model.state_dict(), reference.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert seen == [(1, 2), (2, 2)]
    assert (result.selection.rule, result.selection.epoch, result.selection.epochs_run) == ("FixedEpoch", 2, 2)


def test_retrain_runs_every_epoch_whatever_the_selection_rule(world: MethodWorld) -> None:
    rule = SelectionRule(rule="ForgetReachesTest")
    result = world.run(MethodConfig(name="retrain", epochs=2, batch_size=32, selection=rule))
    assert (result.selection.rule, result.selection.epochs_run) == ("FixedEpoch", 2)
