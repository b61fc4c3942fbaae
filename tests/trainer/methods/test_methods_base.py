"""The epoch helpers every method shares (``methods.base``)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.methods import MethodContext, get_method
from forgetmi_trainer.methods.base import (
    batches,
    checked,
    end_epoch,
    finish,
    mean_image_loss,
    planned_epochs,
    random_batch,
)

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)


def _ctx(world: MethodWorld, method: MethodConfig, seen: list[tuple[int, int, float]] | None = None) -> MethodContext:
    on_epoch = None if seen is None else (lambda e, n, loss: seen.append((e, n, loss)))
    return MethodContext(
        original=copy.deepcopy(world.original),
        inputs=world.inputs,
        method=method,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        precision="fp32",
        seed=0,
        on_epoch=on_epoch,
    )


def test_planned_epochs_follows_the_selection_rule() -> None:
    assert planned_epochs(MethodConfig(epochs=7)) == 7
    assert planned_epochs(MethodConfig(epochs=7, selection=SelectionRule(epoch=3))) == 3
    assert planned_epochs(MethodConfig(epochs=7, selection=SelectionRule(rule="ForgetReachesTest"))) == 7
    with pytest.raises(ConfigError, match=r"method\.selection\.epoch \(8\) exceeds method\.epochs \(7\)\."):
        planned_epochs(MethodConfig(epochs=7, selection=SelectionRule(epoch=8)))


def test_checked_passes_a_finite_loss_and_names_a_non_finite_one() -> None:
    loss = torch.tensor(0.5)
    assert checked(loss, "finetune", 1) is loss
    with pytest.raises(DivergedError, match=r"^The scrub max-step loss became inf at epoch 3\.$"):
        checked(torch.tensor(float("inf")), "scrub max-step", 3)


def test_batches_are_a_shuffled_pass_and_random_batches_draw_with_replacement(world: MethodWorld) -> None:
    parts = batches(11, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert [len(p) for p in parts] == [4, 4, 3]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))
    assert torch.equal(torch.cat(parts), torch.randperm(11, generator=torch.Generator().manual_seed(0)))
    batch = random_batch(world.inputs.retain, 50, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(batch) == 50 and batch.pixels.shape[1:] == world.inputs.retain.pixels.shape[1:]


def test_end_epoch_records_reports_and_applies_forget_reaches_test(world: MethodWorld) -> None:
    seen: list[tuple[int, int, float]] = []
    history: list[dict[str, float]] = []
    fixed = _ctx(world, MethodConfig(epochs=4), seen)
    assert end_epoch(fixed, fixed.original, history, 1, 4, 0.25) is False
    assert history == [{"epoch": 1.0, "loss": 0.25}] and seen == [(1, 4, 0.25)]
    rule = _ctx(world, MethodConfig(epochs=4, selection=SelectionRule(rule="ForgetReachesTest")))
    model = rule.original.train()
    reached = end_epoch(rule, model, history, 2, 4, 0.5)
    assert model.training  # measured in eval mode, then put back
    record = history[-1]
    assert set(record) == {"epoch", "loss", "forget_loss", "validation_loss"}
    assert record["validation_loss"] == pytest.approx(mean_image_loss(model, world.inputs.validation))
    assert reached is (record["forget_loss"] >= record["validation_loss"])
    assert reached is False  # the original fits its forget set better than the validation set


class _Poisoned:
    """A set that fails the test as soon as anything reads it."""

    def __len__(self) -> int:
        raise AssertionError("the test set was read")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the test set was read ({name})")


def _relabelled(data: Encoded) -> Encoded:
    """``data`` with every label moved to the next class: its loss under any model changes."""
    return dataclasses.replace(data, labels=(data.labels + 1) % int(data.labels.max() + 1))


NEGGRAD_UNTIL_CROSSING = MethodConfig(
    name="neggrad-plus", epochs=10, learning_rate=3e-3, batch_size=16, options={"alpha": 0.5},
    selection=SelectionRule(rule="ForgetReachesTest"),
)


def test_the_selection_rule_reads_the_validation_set_and_never_the_test_set(world: MethodWorld) -> None:
    baseline = world.run(NEGGRAD_UNTIL_CROSSING)
    assert 1 < baseline.selection.epoch < NEGGRAD_UNTIL_CROSSING.epochs  # the rule stopped the run
    for test in (_Poisoned(), _relabelled(world.inputs.test)):  # reading T fails; other T labels change nothing
        poisoned = world.run(NEGGRAD_UNTIL_CROSSING, inputs=dataclasses.replace(world.inputs, test=test))
        assert poisoned.history == baseline.history
        assert poisoned.selection == baseline.selection
    # other validation labels do change the selection's losses: V is what the rule reads
    moved = world.run(NEGGRAD_UNTIL_CROSSING,
                      inputs=dataclasses.replace(world.inputs, validation=_relabelled(world.inputs.validation)))
    assert [h["validation_loss"] for h in moved.history] != [h["validation_loss"] for h in baseline.history]


@pytest.mark.parametrize("name", ["forget-mi", "neggrad-plus", "scrub", "finetune"])
def test_forget_reaches_test_without_a_validation_set_is_a_config_error(world: MethodWorld, name: str) -> None:
    method = MethodConfig(name=name, epochs=2, selection=SelectionRule(rule="ForgetReachesTest"))
    ctx = _ctx(world, method)
    ctx.inputs = dataclasses.replace(world.inputs, validation=None)
    seen: list[int] = []
    ctx.on_epoch = lambda e, n, loss: seen.append(e)
    with pytest.raises(ConfigError, match=r"^method\.selection\.rule ForgetReachesTest .* no validation set\.$"):
        get_method(name)(ctx)
    assert seen == []  # refused before the first epoch
    with pytest.raises(ConfigError, match=r"method\.selection\.rule"):
        end_epoch(ctx, ctx.original, [], 1, 2, 0.5)


def test_finish_freezes_the_model_and_selects_the_last_epoch_run(world: MethodWorld) -> None:
    ctx = _ctx(world, MethodConfig(name="finetune", epochs=5))
    model = ctx.original.train()
    result = finish(ctx, model, [{"epoch": 1.0, "loss": 1.0}, {"epoch": 2.0, "loss": 0.9}], start=0.0)
    assert result.model is model and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert (result.selection.rule, result.selection.epoch, result.selection.epochs_run) == ("FixedEpoch", 2, 2)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"^The finetune model has non-finite weights\.$"):
        finish(ctx, model, [], start=0.0)
