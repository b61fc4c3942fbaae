"""Every method gives the same model whether its retain, test and validation sets are in memory or
streamed from storage by the DataLoader (in the main process or in a worker)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from forgetmi_trainer.contract import MethodConfig, SelectionRule

METHODS = {
    "forget-mi": MethodConfig(preset="equal", epochs=2, learning_rate=3e-3, batch_size=8, push_bound=1.5),
    "neggrad-plus": MethodConfig(name="neggrad-plus", epochs=2, learning_rate=1e-3, batch_size=8),
    "scrub": MethodConfig(name="scrub", epochs=2, learning_rate=1e-3, batch_size=16, options={"msteps": 1}),
    "finetune": MethodConfig(name="finetune", epochs=1, learning_rate=1e-3, batch_size=16),
    "retrain": MethodConfig(name="retrain", preset="equal", epochs=1, learning_rate=3e-3, batch_size=16),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_streamed_retain_and_test_give_the_in_memory_model(world, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    method = METHODS[name]
    if name != "retrain":  # the selection rule reads the validation set every epoch
        method = method.model_copy(update={"selection": SelectionRule(rule="ForgetReachesTest")})
    in_memory = world.run(method)
    _, retain_rows, test_rows, val_rows = world.rows
    with world.stream(tmp_path / "cache", workers=1 if name == "forget-mi" else 0) as stream:
        inputs = dataclasses.replace(world.inputs, retain=stream.view(retain_rows), test=stream.view(test_rows),
                                     validation=stream.view(val_rows))
        streamed = world.run(method, inputs=inputs)
    assert streamed.history == in_memory.history
    assert streamed.embedding_scale == in_memory.embedding_scale
    expected = in_memory.model.state_dict()
    for key, value in streamed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
