"""The Forget-MI loss terms against plain loop computations (FORGET_MI.md §4)."""

from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch

from forgetmi_trainer import losses
from forgetmi_trainer.contract import LossWeights, PresetName


def _ref_distances(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Euclidean distance per row with explicit python loops."""
    out = []
    for row_a, row_b in zip(a.tolist(), b.tolist(), strict=True):
        out.append(math.sqrt(sum((x - y) ** 2 for x, y in zip(row_a, row_b, strict=True))))
    return out


def _pair(seed: int, batch: int = 5, dim: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    b = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return a, b


def test_pairwise_distance_matches_loop_reference() -> None:
    a, b = _pair(0)
    got = losses.pairwise_distance(a, b)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), _ref_distances(a, b), rtol=1e-12)


def test_pairwise_distance_is_zero_with_finite_gradient_when_equal() -> None:
    a = torch.randn(4, 3, requires_grad=True)
    d = losses.pairwise_distance(a, a.detach().clone())
    assert torch.equal(d.detach(), torch.zeros(4))
    d.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_pairwise_distance_upcasts_bf16_to_float32() -> None:
    a, b = _pair(1)
    d = losses.pairwise_distance(a.to(torch.bfloat16), b.to(torch.bfloat16))
    assert d.dtype == torch.float32
    np.testing.assert_allclose(d.numpy(), _ref_distances(a, b), rtol=2e-2)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((4, 3), (4, 2)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3)), ((0, 3), (0, 3))],
)
def test_pairwise_distance_rejects_bad_shapes(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="embeddings"):
        losses.pairwise_distance(torch.zeros(a_shape), torch.zeros(b_shape))


@pytest.mark.parametrize("term", [losses.unimodal_unlearning, losses.multimodal_unlearning])
def test_unbounded_push_terms_are_minus_mean_distance(term: typing.Callable[..., torch.Tensor]) -> None:
    a, b = _pair(2)
    assert term(a, b).item() == pytest.approx(-sum(_ref_distances(a, b)) / 5, rel=1e-12)


@pytest.mark.parametrize("term", [losses.unimodal_retention, losses.multimodal_retention])
def test_retention_terms_are_mean_distance(term: typing.Callable[..., torch.Tensor]) -> None:
    a, b = _pair(3)
    assert term(a, b).item() == pytest.approx(sum(_ref_distances(a, b)) / 5, rel=1e-12)


@pytest.mark.parametrize("term", [losses.unimodal_unlearning, losses.multimodal_unlearning])
def test_bounded_push_terms_are_mean_relu_of_margin(term: typing.Callable[..., torch.Tensor]) -> None:
    a, b = _pair(4)
    dists = _ref_distances(a, b)
    bound = float(np.median(dists))  # some samples inside the margin, some beyond it
    expected = sum(max(bound - d, 0.0) for d in dists) / len(dists)
    value = term(a, b, bound=bound)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert value.item() > 0
    far = term(a, b + 100.0, bound=bound)  # every d >= m
    assert far.item() == 0.0


def test_bounded_push_is_non_negative_and_has_zero_gradient_beyond_the_bound() -> None:
    a, b = _pair(5)
    ul = (a + 50.0).requires_grad_(True)
    value = losses.unimodal_unlearning(ul, b, bound=1.0)
    value.backward()
    assert value.item() == 0.0 and ul.grad is not None and torch.count_nonzero(ul.grad) == 0
    for seed in range(5):
        x, y = _pair(10 + seed)
        assert losses.multimodal_unlearning(x, y, bound=3.0).item() >= 0.0


@pytest.mark.parametrize("bound", [0.0, -1.0])
def test_non_positive_bound_is_rejected(bound: float) -> None:
    a, b = _pair(6)
    with pytest.raises(ValueError, match="push_bound"):
        losses.unimodal_unlearning(a, b, bound=bound)


def test_gradients_are_finite_and_never_reach_the_original_model() -> None:
    a, b = _pair(7)
    ul = a.clone().requires_grad_(True)
    og = b.clone().requires_grad_(True)
    og_equal = a.clone().requires_grad_(True)  # d == 0 for the push term
    terms = losses.LossTerms(
        uu=losses.unimodal_unlearning(ul, og_equal),
        mu=losses.multimodal_unlearning(ul, og, bound=2.0),
        ur=losses.unimodal_retention(ul, og),
        mr=losses.multimodal_retention(ul, og),
    )
    losses.combine(terms, LossWeights(uu=1, mu=1, ur=1, mr=1)).backward()
    assert ul.grad is not None and torch.isfinite(ul.grad).all() and ul.grad.abs().sum() > 0
    assert og.grad is None and og_equal.grad is None


def test_one_gradient_step_pushes_with_push_and_pulls_with_pull() -> None:
    a, b = _pair(8)
    for sign, moves_away in (("push", True), ("pull", False)):
        ul = a.clone().requires_grad_(True)
        zero = torch.zeros((), dtype=torch.float64)
        terms = losses.LossTerms(uu=losses.unimodal_unlearning(ul, b), mu=zero, ur=zero, mr=zero)
        losses.combine(terms, LossWeights(uu=1, mu=0, ur=0, mr=0), sign=sign).backward()
        assert ul.grad is not None
        before = losses.pairwise_distance(a, b).mean()
        after = losses.pairwise_distance(a - 0.1 * ul.grad, b).mean()
        assert bool(after > before) is moves_away


# FORGET_MI.md §4 lists each preset as (w_UU, w_UR, w_MU, w_MR).
PAPER_TABLE = {
    "equal": (0.25, 0.25, 0.25, 0.25),
    "multimodal": (0.1, 0.1, 0.4, 0.4),
    "unimodal": (0.4, 0.4, 0.1, 0.1),
    "retention": (0.1, 0.4, 0.1, 0.4),
}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_presets_match_the_paper_table_and_sum_to_one(name: str) -> None:
    w = losses.PRESETS[name]
    assert (w.uu, w.ur, w.mu, w.mr) == pytest.approx(PAPER_TABLE[name])
    assert w.uu + w.ur + w.mu + w.mr == pytest.approx(1.0)


def test_presets_cover_every_preset_name_of_the_contract() -> None:
    assert set(losses.PRESETS) == set(typing.get_args(PresetName))


def test_normalised_keeps_ratios_and_sums_to_one() -> None:
    w = losses.normalised(LossWeights(uu=2, mu=1, ur=1, mr=0))
    assert (w.uu, w.mu, w.ur, w.mr) == pytest.approx((0.5, 0.25, 0.25, 0.0))
    zero = LossWeights.model_construct(uu=0.0, mu=0.0, ur=0.0, mr=0.0)
    with pytest.raises(ValueError, match="weights"):
        losses.normalised(zero)


def test_resolve_weights_prefers_explicit_weights_and_normalises() -> None:
    explicit = losses.resolve_weights("equal", LossWeights(uu=3, mu=0, ur=1, mr=0))
    assert (explicit.uu, explicit.mu, explicit.ur, explicit.mr) == pytest.approx((0.75, 0.0, 0.25, 0.0))
    preset = losses.resolve_weights("retention", None)
    assert (preset.uu, preset.ur, preset.mu, preset.mr) == pytest.approx(PAPER_TABLE["retention"])
    assert preset is not losses.PRESETS["retention"]  # callers may not mutate the shared table
    with pytest.raises(ValueError, match=r"method\.preset"):
        losses.resolve_weights("aggressive", None)


def _terms(uu: float, mu: float, ur: float, mr: float) -> losses.LossTerms:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return losses.LossTerms(uu=t(uu), mu=t(mu), ur=t(ur), mr=t(mr))


def test_combine_is_the_normalised_weighted_sum() -> None:
    terms = _terms(-2.0, -3.0, 0.5, 0.7)
    weights = LossWeights(uu=4, mu=1, ur=4, mr=1)  # sums to 10
    expected = (4 * -2.0 + 1 * -3.0 + 4 * 0.5 + 1 * 0.7) / 10
    assert losses.combine(terms, weights).item() == pytest.approx(expected, rel=1e-12)


def test_pull_flips_only_the_unlearning_terms() -> None:
    terms = _terms(-2.0, -3.0, 0.5, 0.7)
    w = LossWeights(uu=0.4, mu=0.1, ur=0.4, mr=0.1)
    push = losses.combine(terms, w, sign="push").item()
    pull = losses.combine(terms, w, sign="pull").item()
    assert pull == pytest.approx(0.4 * 2.0 + 0.1 * 3.0 + 0.4 * 0.5 + 0.1 * 0.7, rel=1e-12)
    assert push + pull == pytest.approx(2 * (0.4 * 0.5 + 0.1 * 0.7), rel=1e-12)


def test_bounded_pull_is_mean_of_min_distance_and_bound_minus_bound() -> None:
    a, b = _pair(9)
    dists = _ref_distances(a, b)
    m = float(np.median(dists))
    zero = torch.zeros((), dtype=torch.float64)
    terms = losses.LossTerms(uu=losses.unimodal_unlearning(a, b, bound=m), mu=zero, ur=zero, mr=zero)
    pulled = losses.combine(terms, LossWeights(uu=1, mu=0, ur=0, mr=0), sign="pull").item()
    assert pulled == pytest.approx(sum(min(d, m) for d in dists) / len(dists) - m, rel=1e-12)
    assert -m <= pulled <= 0


def test_combine_rejects_bad_sign_and_non_scalar_terms() -> None:
    w = LossWeights(uu=1, mu=1, ur=1, mr=1)
    with pytest.raises(ValueError, match=r"method\.sign"):
        losses.combine(_terms(0, 0, 0, 0), w, sign="sideways")  # type: ignore[arg-type]
    batch = dataclasses.replace(_terms(0, 0, 0, 0), ur=torch.zeros(3))
    with pytest.raises(ValueError, match="ur must be a scalar"):
        losses.combine(batch, w)


def _as_floats(terms: losses.LossTerms) -> dict[str, float]:
    return {name: float(getattr(terms, name).detach()) for name in ("uu", "mu", "ur", "mr")}


def test_loss_terms_are_frozen() -> None:
    terms = _terms(-1.0, -2.0, 0.25, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        terms.uu = torch.tensor(0.0)  # type: ignore[misc]
    assert _as_floats(terms) == {"uu": -1.0, "mu": -2.0, "ur": 0.25, "mr": 0.5}
