"""The ``neggrad-plus`` baseline on a tiny trained original."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule
from forgetmi_trainer.methods.base import mean_image_loss, task_logits
from forgetmi_trainer.methods.neggrad_plus import bounded_forget_loss

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)


def test_neggrad_plus_raises_the_forget_loss(world: MethodWorld) -> None:
    """Bounded ascent raises the forget loss above the original's; with alpha = 1 (no ascent
    term, retain descent only) it stays lower."""
    method = MethodConfig(name="neggrad-plus", epochs=5, learning_rate=3e-3, batch_size=16, options={"alpha": 0.5})
    ascent = world.run(method)
    descent = world.run(method.model_copy(update={"options": {"alpha": 1.0}}))
    forget_loss = mean_image_loss(ascent.model, world.inputs.forget)
    assert forget_loss > mean_image_loss(world.original, world.inputs.forget) + 0.1
    assert forget_loss > mean_image_loss(descent.model, world.inputs.forget) + 0.1
    assert all(np.isfinite(h["loss"]) for h in ascent.history)


@torch.no_grad()
def test_bounded_forget_loss_caps_each_heads_per_sample_cross_entropy(world: MethodWorld) -> None:
    model = world.original.eval()
    batch = world.inputs.forget.take(torch.arange(8))
    ce = [torch.nn.functional.cross_entropy(lg, batch.labels, reduction="none") for lg in task_logits(model, batch)]
    assert len(ce) == 3
    unbounded = sum(c.mean() for c in ce)
    torch.testing.assert_close(bounded_forget_loss(model, batch, 0.0), unbounded)  # 0 = no bound
    cap = float(torch.cat(ce).median())  # some samples above the cap, some below
    torch.testing.assert_close(bounded_forget_loss(model, batch, cap), sum(c.clamp(max=cap).mean() for c in ce))
    assert float(bounded_forget_loss(model, batch, cap)) < float(unbounded)


def test_forget_reaches_test_stops_neggrad_plus_at_the_first_crossing(world: MethodWorld) -> None:
    method = MethodConfig(
        name="neggrad-plus",
        epochs=10,
        learning_rate=3e-3,
        batch_size=16,
        options={"alpha": 0.5},
        selection=SelectionRule(rule="ForgetReachesTest"),
    )
    result = world.run(method)
    world.check_first_crossing(result, method.epochs)
