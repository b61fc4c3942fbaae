"""The epoch helpers every method shares (``methods.base``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.methods import MethodContext
from forgetmi_trainer.methods.base import batches, checked, end_epoch, finish, planned_epochs, random_batch

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
    assert set(record) == {"epoch", "loss", "forget_loss", "test_loss"}
    assert reached is (record["forget_loss"] >= record["test_loss"])
    assert reached is False  # the original fits its forget set better than the test set


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
