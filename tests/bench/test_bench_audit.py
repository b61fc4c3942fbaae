"""bench/bench_audit.py: the bench's LiRA references (each training patient IN exactly 2 of 4) and its count
of sample-passes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from forgetmi_trainer.data import Encoded
from forgetmi_trainer.model import MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.train import TrainConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"
_spec = importlib.util.spec_from_file_location("bench_audit", BENCH / "bench_audit.py")
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules["bench_audit"] = audit
_spec.loader.exec_module(audit)

CONFIG = MultimodalConfig(num_labels=3, image_size=16, image_channels=1, text_encoder_config=tiny_bert_config(40))


def encoded(n: int, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    return Encoded(torch.rand(n, 1, 16, 16, generator=g), torch.randint(5, 40, (n, 8), generator=g),
                   torch.ones(n, 8, dtype=torch.long), torch.randint(0, 3, (n,), generator=g))


def world(patients: int = 12, per_patient: int = 2, test_patients: int = 4) -> SimpleNamespace:
    groups = np.repeat(np.arange(patients), per_patient)
    splits = ["test" if p >= patients - test_patients else "train" for p in groups]
    return SimpleNamespace(seed=3, groups=groups, manifest=SimpleNamespace(splits=splits),
                           encoded=encoded(groups.size), config=CONFIG, device=torch.device("cpu"), precision="fp32")


def test_every_training_patient_is_in_exactly_two_of_four_references_and_no_other_row_in_any() -> None:
    w = world()
    stats, seconds = audit.train_references(w, TrainConfig(epochs=1, batch_size=8))
    train = np.asarray(w.manifest.splits) == "train"
    assert stats.phi.shape == stats.member.shape == (w.groups.size, 4)
    assert np.isfinite(stats.phi).all() and seconds > 0
    assert (stats.member[train].sum(axis=1) == 2).all()
    assert not stats.member[~train].any()
    for p in np.unique(w.groups):  # a patient's samples share their references
        rows = stats.member[w.groups == p]
        assert (rows == rows[0]).all()
    assert len({tuple(stats.member[w.groups == p][0]) for p in np.unique(w.groups[train])}) > 1  # drawn, not fixed
    # the forget and T rows line up with the statistics handed to the audit
    forget, test = np.flatnonzero(train)[:4], np.flatnonzero(~train)
    inputs = audit.lira_inputs(stats, forget, test)
    assert np.array_equal(inputs.forget.phi, stats.phi[forget])
    assert np.array_equal(inputs.test.member, stats.member[test])


def test_the_counter_counts_every_sample_through_the_image_encoder_and_those_with_a_gradient() -> None:
    model = build_model(CONFIG, 0)
    frozen = build_model(CONFIG, 1).requires_grad_(False)
    batch = encoded(5)
    with audit.PassCounter() as counter:
        with torch.no_grad():
            model.encode_image(batch.pixels)  # an image-only scoring pass: 5 forwards
        out = model(batch.pixels[:3], batch.input_ids[:3], batch.attention_mask[:3])  # 3 forward + backward
        out.image_logits.sum().backward()
        frozen(batch.pixels, batch.input_ids, batch.attention_mask)  # a frozen teacher: 5 forwards
    assert (counter.passes, counter.passes_grad) == (13, 3)
    model.encode_image(batch.pixels)  # after the context: not counted
    assert counter.passes == 13
