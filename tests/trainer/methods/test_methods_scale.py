"""The embedding scale that makes the strength of a method scale-free (``methods.scale``), and the
relative bounds of Forget-MI and NegGrad+ built on it."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from forgetmi_trainer.contract import MethodConfig
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.methods import neggrad_plus, scale
from forgetmi_trainer.methods.base import freeze
from forgetmi_trainer.model import MultimodalClassifier

MethodWorld = Any  # conftest's MethodWorld (conftest modules are not imported by name)
FAST = MethodConfig(preset="equal", epochs=2, learning_rate=3e-3, batch_size=16, push_bound=0.5)


def test_sample_pairs_are_distinct_seeded_and_at_most_max_pairs() -> None:
    i, j = scale.sample_pairs(5, torch.Generator().manual_seed(0))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(a, b) for a in range(5) for b in range(a + 1, 5)]
    i, j = scale.sample_pairs(1000, torch.Generator().manual_seed(0))
    assert len(i) == len(j) == scale.MAX_PAIRS == 2000
    assert bool((i != j).all()) and int(i.min()) >= 0 and int(j.max()) < 1000
    assert len(set(i.tolist()) | set(j.tolist())) > 900  # spread over the set, not a few samples
    again = scale.sample_pairs(1000, torch.Generator().manual_seed(0))
    other = scale.sample_pairs(1000, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], i) and torch.equal(again[1], j)
    assert not torch.equal(other[0], i)
    assert [len(p) for p in scale.sample_pairs(1, torch.Generator())] == [0, 0]
    assert len(scale.sample_pairs(64, torch.Generator(), max_pairs=2016)[0]) == 2016  # 64·63/2: every pair


def test_median_distance_is_the_median_of_the_pairs_l2_distances() -> None:
    a = torch.zeros(5, 2)
    b = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [6.0, 8.0], [0.0, 0.0]])  # distances 5, 1, 2, 10, 0
    assert scale.median_distance(a, b) == 2.0
    with pytest.raises(ValueError, match="pairs, dim"):
        scale.median_distance(a, b[:3])


def _brute_force_median(model: MultimodalClassifier, pixels: torch.Tensor, seed: int) -> float:
    i, j = scale.sample_pairs(len(pixels), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        emb = model.encode_image(pixels)
    return float((emb[i] - emb[j]).norm(dim=1).median())


def test_measure_takes_the_median_over_seeded_pairs_in_eval_mode(world: MethodWorld) -> None:
    model = copy.deepcopy(world.original).train()
    retain = world.inputs.retain
    measured = scale.measure(model, retain, seed=3)
    assert model.training  # measured in eval mode, then put back
    n = len(retain)
    assert measured.pairs == min(n * (n - 1) // 2, scale.MAX_PAIRS)
    assert measured.push_bound is None
    assert measured.median_distance == pytest.approx(_brute_force_median(model.eval(), retain.pixels, 3), rel=1e-5)
    assert measured.median_distance > 0
    bounded = scale.measure(model, retain, seed=3, push_bound=0.5)
    assert bounded.push_bound == pytest.approx(0.5 * measured.median_distance)


def _embeddings_scaled(model: MultimodalClassifier, factor: float) -> MultimodalClassifier:
    """A copy of ``model`` whose image embeddings are ``factor`` times the original's."""
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.image_proj.weight.mul_(factor)
        scaled.image_proj.bias.mul_(factor)
    return scaled


def test_one_relative_bound_scales_with_the_embeddings(world: MethodWorld) -> None:
    """Embeddings ten times larger: the measured scale and the absolute bound of the same
    relative value are ten times larger, so the relative value means the same."""
    retain = world.inputs.retain
    base = scale.measure(world.original, retain, seed=0, push_bound=0.5)
    tenfold = scale.measure(_embeddings_scaled(world.original, 10.0), retain, seed=0, push_bound=0.5)
    assert tenfold.median_distance == pytest.approx(10 * base.median_distance, rel=1e-5)
    assert tenfold.push_bound == pytest.approx(10 * base.push_bound, rel=1e-5)  # type: ignore[operator]


def test_forget_mi_pushes_with_the_absolute_bound_and_returns_the_scale(
    world: MethodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgetmi_trainer.methods import forget_mi

    bounds: list[float | None] = []
    real = forget_mi.step_terms

    def recording(*args: Any) -> Any:
        bounds.append(args[-1])
        return real(*args)

    monkeypatch.setattr(forget_mi, "step_terms", recording)
    result = world.run(FAST)
    expected = scale.measure(freeze(copy.deepcopy(world.original)), world.inputs.retain, seed=0, push_bound=0.5)
    assert result.embedding_scale == expected
    assert expected.push_bound is not None and bounds and set(bounds) == {expected.push_bound}
    unbounded = world.run(FAST.model_copy(update={"push_bound": None}))
    assert unbounded.embedding_scale is not None and unbounded.embedding_scale.push_bound is None
    assert unbounded.embedding_scale.median_distance == expected.median_distance


def test_a_relative_bound_needs_two_retain_samples(world: MethodWorld) -> None:
    one = world.inputs.retain.take(torch.tensor([0]))
    with pytest.raises(ConfigError, match=r"^method\.push_bound is relative .* the retain set holds 1\.$"):
        scale.measure(world.original, one, seed=0, push_bound=0.5)
    assert scale.measure(world.original, one, seed=0).pairs == 0


def test_neggrad_plus_caps_the_forget_loss_at_bound_times_ln_c(
    world: MethodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert neggrad_plus.absolute_bound(1.0, 4) == pytest.approx(math.log(4))
    assert neggrad_plus.absolute_bound(2.0, 10) == pytest.approx(2 * math.log(10))
    assert neggrad_plus.absolute_bound(0.0, 4) == 0.0  # 0 stays "no bound"
    caps: list[float] = []
    real = neggrad_plus.bounded_forget_loss

    def recording(model: Any, batch: Any, bound: float) -> torch.Tensor:
        caps.append(bound)
        return real(model, batch, bound)

    monkeypatch.setattr(neggrad_plus, "bounded_forget_loss", recording)
    method = MethodConfig(name="neggrad-plus", epochs=1, learning_rate=1e-3, batch_size=16, options={"bound": 2.0})
    world.run(method)
    c = world.original.config.num_labels
    assert caps and all(cap == pytest.approx(2.0 * math.log(c)) for cap in caps)
