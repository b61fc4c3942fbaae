"""The Forget-MI method (``methods.forget_mi``) on a tiny trained original (trained once per module)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from harness.samples import encode_manifest

from forgetmi_trainer import data, losses, synthetic
from forgetmi_trainer.checkpoint import fetch_model, load_model
from forgetmi_trainer.contract import MethodConfig, NoiseConfig, SelectionRule
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.demo import DEMO_METHOD
from forgetmi_trainer.encoders import TINY_TEXT_LENGTH
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.evaluate import Scored, model_metrics
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.methods import MethodContext, UnlearnInputs, UnlearnResult, forget_mi
from forgetmi_trainer.methods.base import EpochCallback, freeze, mean_image_loss
from forgetmi_trainer.methods.forget_mi import RetainEmbeddings, frozen_embeddings, run_forget_mi, step_terms
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.splits import resolve as split
from forgetmi_trainer.train import TrainConfig, fit_and_publish

CPU = torch.device("cpu")
FAST = MethodConfig(preset="equal", epochs=3, learning_rate=3e-3, batch_size=16, push_bound=1.5)
LOOSE = DEMO_METHOD.model_copy(update={"push_bound": 2.0})
"""The demo's recipe with a loose bound (2 × the embedding scale): on this small world the push goes far."""


@dataclass
class World:
    original: MultimodalClassifier
    inputs: UnlearnInputs
    directory: Path

    def fresh_original(self) -> MultimodalClassifier:
        """A new copy of the original (tests that mutate or freeze it get their own)."""
        model, _, _ = load_model(self.directory)
        return model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("unlearn")
    samples = synthetic.generate(synthetic.SynthParams(patients=40, seed=0))
    manifest_uri = synthetic.write_dataset(samples, (root / "data").as_uri())
    forget_subjects = synthetic.choose_forget_subjects(samples, 0.15, seed=0)
    model_uri = (root / "registry" / "m" / "versions" / "v1").as_uri()
    fit_and_publish(manifest_uri, model_uri, recipe=TrainConfig(epochs=40), seed=0, device="cpu", precision="fp32")
    fetch_model(model_uri, root / "original")
    original, tokenizer, preprocessing = load_model(root / "original")
    manifest = read_manifest(manifest_uri)
    sets = split(manifest, forget_subjects)
    encoded = encode_manifest(manifest, manifest_uri, tokenizer, preprocessing)
    forget, retain, test, validation = (encoded.take(ix) for ix in (sets.forget, sets.retain, sets.test,
                                                                     sets.validation))
    pool = data.noisy_text_pool([manifest.texts[i] for i in sets.forget], 0.5, 4, 0, str(tokenizer.mask_token))
    noisy = [data.tokenize(tokenizer, p, TINY_TEXT_LENGTH) for p in pool]
    return World(original, UnlearnInputs(forget, retain, test, noisy, validation=validation), root / "original")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _forget_mi(
    original: MultimodalClassifier,
    inputs: UnlearnInputs,
    method: MethodConfig,
    *,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    """Forget-MI on the CPU in fp32 with a generator seeded ``seed``."""
    ctx = MethodContext(
        original=original,
        inputs=inputs,
        method=method,
        generator=_gen(seed),
        device=CPU,
        precision="fp32",
        seed=0,
        on_epoch=on_epoch,
    )
    return run_forget_mi(ctx)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_original_is_left_unchanged_and_frozen(world: World) -> None:
    original = world.fresh_original()
    before = _state(original)
    result = _forget_mi(original, world.inputs, FAST)
    after = original.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not original.training
    assert not any(p.requires_grad for p in original.parameters())
    assert result.model is not original
    # the unlearned model did move
    moved = result.model.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.startswith("image_encoder"))
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.startswith("text_encoder"))


def test_heads_and_fusion_gate_are_unchanged(world: World) -> None:
    result = _forget_mi(world.fresh_original(), world.inputs, FAST)
    og, ul = world.original.state_dict(), result.model.state_dict()
    kept = [k for k in og if k.startswith(("image_head.", "text_head.", "fusion."))]
    assert len(kept) >= 8
    assert all(torch.equal(og[k], ul[k]) for k in kept)
    assert not result.model.training
    assert not any(p.requires_grad for p in result.model.parameters())


def test_is_deterministic_for_a_seed(world: World) -> None:
    a = _forget_mi(world.fresh_original(), world.inputs, FAST, seed=3)
    b = _forget_mi(world.fresh_original(), world.inputs, FAST, seed=3)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fixed_epoch_selection_runs_that_many_epochs(world: World) -> None:
    method = FAST.model_copy(update={"epochs": 5, "selection": SelectionRule(rule="FixedEpoch", epoch=2)})
    epochs_seen: list[tuple[int, int]] = []
    result = _forget_mi(
        world.fresh_original(),
        world.inputs,
        method,
        on_epoch=lambda e, n, loss: epochs_seen.append((e, n)),
    )
    assert result.selection.rule == "FixedEpoch"
    assert result.selection.epoch == 2
    assert result.selection.epochs_run == 2
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert epochs_seen == [(1, 2), (2, 2)]
    default = _forget_mi(world.fresh_original(), world.inputs, FAST)
    assert (default.selection.epoch, default.selection.epochs_run) == (FAST.epochs, FAST.epochs)


def test_forget_reaches_test_stops_at_first_crossing(world: World) -> None:
    method = LOOSE.model_copy(update={"epochs": 30, "selection": SelectionRule(rule="ForgetReachesTest")})
    result = _forget_mi(world.fresh_original(), world.inputs, method)
    history = result.history
    assert all("forget_loss" in h and "validation_loss" in h and "test_loss" not in h for h in history)
    assert history[0]["forget_loss"] < history[0]["validation_loss"]  # the original fits its forget set
    assert result.selection.rule == "ForgetReachesTest"
    assert result.selection.epochs_run == len(history)
    assert all(h["forget_loss"] < h["validation_loss"] for h in history[:-1])
    # the push reaches the validation loss well within 30 epochs on this data; the loop stops there
    assert 1 < len(history) < method.epochs
    assert history[-1]["forget_loss"] >= history[-1]["validation_loss"]
    assert result.selection.epoch == len(history)
    # the model returned is the stopping epoch's: its losses are the ones recorded for that epoch
    assert world.inputs.validation is not None
    assert mean_image_loss(result.model, world.inputs.forget) == pytest.approx(history[-1]["forget_loss"], rel=1e-6)
    assert mean_image_loss(result.model, world.inputs.validation) == pytest.approx(
        history[-1]["validation_loss"], rel=1e-6)


def test_selection_epoch_beyond_epochs_is_config_error(world: World) -> None:
    method = FAST.model_copy(update={"epochs": 3, "selection": SelectionRule(rule="FixedEpoch", epoch=4)})
    with pytest.raises(ConfigError, match=r"method\.selection\.epoch \(4\) exceeds method\.epochs \(3\)"):
        _forget_mi(world.fresh_original(), world.inputs, method)


def test_nan_inputs_diverge(world: World) -> None:
    forget = world.inputs.forget
    bad = dataclasses.replace(
        world.inputs,
        forget=data.Encoded(
            torch.full_like(forget.pixels, float("nan")), forget.input_ids, forget.attention_mask, forget.labels
        ),
    )
    with pytest.raises(DivergedError, match="loss became nan at epoch 1"):
        _forget_mi(world.fresh_original(), bad, FAST)


def _metrics(world: World, model: MultimodalClassifier) -> tuple[float, float, float]:
    sets = (world.inputs.forget, world.inputs.retain, world.inputs.test, world.inputs.validation)
    logits = [image_logits([model], d)[0] for d in sets]  # type: ignore[arg-type]
    scored = [Scored(x, d.labels.numpy(), np.arange(len(d))) for x, d in zip(logits, sets, strict=True)]  # type: ignore[union-attr]
    m = model_metrics(*scored[:3], validation=scored[3], seed=0, bootstrap=0)
    assert m.split.forget_auc is not None and m.mia.score is not None and m.mia.attack_auc is not None
    return m.split.forget_auc, m.mia.score, m.mia.attack_auc


def test_pull_sign_forgets_nothing_but_push_does(world: World) -> None:
    noise = NoiseConfig(image_std=0.1)
    original = _metrics(world, world.original)
    pull = _forget_mi(
        world.fresh_original(),
        world.inputs,
        LOOSE.model_copy(update={"sign": "pull", "noise": noise}),
    )
    pulled = _metrics(world, pull.model)
    assert abs(pulled[0] - original[0]) <= 0.05, (original, pulled)  # forget AUC
    assert abs(pulled[1] - original[1]) <= 0.1, (original, pulled)  # paper MIA
    push = _forget_mi(
        world.fresh_original(),
        world.inputs,
        LOOSE.model_copy(update={"sign": "push", "noise": noise}),
    )
    pushed = _metrics(world, push.model)
    # the same recipe with the push sign does forget: the pull's null result is the sign's doing
    assert original[0] - pushed[0] >= 0.1, (original, pushed)
    assert original[1] - pushed[1] >= 0.2, (original, pushed)


def test_cached_retain_embeddings_equal_a_fresh_forward_pass(world: World) -> None:
    original = world.fresh_original()
    retain = world.inputs.retain
    units, joints = frozen_embeddings(original, retain, original.fusion, batch_size=7)
    assert units.shape == (len(retain), 2 * original.config.embed_dim)
    assert joints.shape == (len(retain), original.config.embed_dim)
    idx = torch.tensor([0, 5, len(retain) - 1])
    batch = retain.take(idx)
    with torch.no_grad():
        out = original(batch.pixels, batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(units[idx], torch.cat([out.image_embeds, out.text_embeds], dim=-1))
    torch.testing.assert_close(joints[idx], out.joint_embeds)


def test_one_forward_over_forget_and_retain_gives_the_separate_passes_terms_and_gradients(world: World) -> None:
    """``step_terms`` runs ``F_ul`` once on x and r together; in eval mode that must equal two passes."""
    original = world.fresh_original().eval()
    gate = original.fusion
    x, r = world.inputs.forget.take(torch.arange(6)), world.inputs.retain.take(torch.tensor([3, 1, 4, 1, 5, 9]))
    og_f = frozen_embeddings(original, x, gate)  # any fixed targets will do for the comparison
    og_r = frozen_embeddings(original, r, gate)
    moved = world.fresh_original().eval()
    with torch.no_grad():  # move F_ul off F_og so that every term is non-zero
        for p in moved.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=_gen(3)))

    def grads(terms: losses.LossTerms) -> tuple[torch.Tensor, list[torch.Tensor]]:
        moved.zero_grad(set_to_none=True)
        total = terms.uu + terms.mu + terms.ur + terms.mr
        total.backward()
        return total.detach(), [p.grad.clone() for p in moved.parameters() if p.grad is not None]

    def separate_terms(mr_scale: float = 1.0) -> losses.LossTerms:
        """The four terms from two passes of ``F_ul``, one over x and one over r."""
        ul_f = moved(x.pixels, x.input_ids, x.attention_mask, fusion=gate)
        ul_r = moved(r.pixels, r.input_ids, r.attention_mask, fusion=gate)
        unit = lambda out: torch.cat([out.image_embeds, out.text_embeds], dim=-1)  # noqa: E731
        return losses.LossTerms(
            uu=losses.unimodal_unlearning(unit(ul_f), og_f[0], 30.0),
            mu=losses.multimodal_unlearning(ul_f.joint_embeds, og_f[1], 30.0),
            ur=losses.unimodal_retention(unit(ul_r), og_r[0]),
            mr=mr_scale * losses.multimodal_retention(ul_r.joint_embeds, og_r[1]),
        )

    fused_terms = step_terms(moved, x, r, og_f, og_r, gate, 30.0)
    fused_total, fused_grads = grads(fused_terms)
    separate = separate_terms()
    for name in ("uu", "mu", "ur", "mr"):
        assert float(getattr(separate, name).detach()) != 0, name
        torch.testing.assert_close(getattr(fused_terms, name), getattr(separate, name))
    separate_total, separate_grads = grads(separate)
    torch.testing.assert_close(fused_total, separate_total)
    assert len(fused_grads) == len(separate_grads) > 0
    # Tolerance. Both ways compute each gradient from the same float32 products, summed in another
    # order (batched matmuls and reductions over 12 rows instead of two passes over 6), so an element
    # may differ by a few ulps of the magnitudes summed into it: those of the largest gradients, not
    # of the element itself. A small element that is the difference of large contributions, or one
    # that is zero in exact arithmetic (an attention key bias's gradient), carries an error of order
    # eps · max|g| (one run here differed by 1.2e-6 on an element of 1.7e-3, with max|g| ≈ 12). So the
    # absolute tolerance is 32 float32 ulps of the largest gradient, and the relative one 1e-5.
    largest = max(float(g.abs().max()) for g in separate_grads)
    atol = 32 * torch.finfo(torch.float32).eps * largest
    for a, b in zip(fused_grads, separate_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)
    # A wrong term falls far outside it: the smallest term (mr, about 1 % of the loss) off by 0.1 %.
    _, wrong_grads = grads(separate_terms(mr_scale=1.001))
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=atol) for a, b in zip(fused_grads, wrong_grads, strict=True))


def test_mean_image_loss_is_the_image_heads_cross_entropy_of_a_full_forward_pass(world: World) -> None:
    model = world.fresh_original().eval()
    test = world.inputs.test
    with torch.no_grad():
        logits = model(test.pixels, test.input_ids, test.attention_mask).image_logits
    expected = float(torch.nn.functional.cross_entropy(logits, test.labels))
    assert mean_image_loss(model, test, batch_size=5) == pytest.approx(expected, rel=1e-5)


def test_retain_embeddings_are_computed_once_and_only_for_samples_asked_for(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = freeze(world.fresh_original())
    retain = world.inputs.retain
    full_units, full_joints = frozen_embeddings(original, retain, original.fusion)
    computed: list[int] = []
    real = forget_mi.frozen_embeddings

    def counting(f_og: MultimodalClassifier, data: Encoded, *args: object, **kwargs: object) -> tuple:
        computed.append(len(data))
        return real(f_og, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forget_mi, "frozen_embeddings", counting)
    cache = RetainEmbeddings(original, len(retain), original.fusion, "fp32")
    with pytest.raises(RuntimeError, match="before need"):
        cache.take(torch.tensor([0]))

    def need(ids: list[int]) -> None:
        idx = torch.tensor(ids)
        cache.need(idx, retain.take(idx))

    need([4, 2, 4, 7])
    assert computed == [3]  # the repeat is computed once
    need([2, 7, 9])
    assert computed == [3, 1]  # only the new sample
    need([9, 4])
    assert computed == [3, 1]  # nothing new: no pass at all
    idx = torch.tensor([9, 2, 4, 7, 2])
    units, joints = cache.take(idx)
    torch.testing.assert_close(units, full_units[idx])
    torch.testing.assert_close(joints, full_joints[idx])
    with pytest.raises(RuntimeError, match="before need"):
        cache.take(torch.tensor([1]))
    assert int((cache.slot >= 0).sum()) == 4 < len(retain)
    assert cache.units is not None and len(cache.units) == 4  # memory for the samples touched only


def test_draw_epoch_makes_the_draws_of_a_step_by_step_loop() -> None:
    pixels = torch.rand(11, 1, 4, 4)
    order = torch.randperm(11, generator=_gen(7))
    noise = NoiseConfig(image_mean=0.0, image_std=0.3)
    noisy, retain_ids = forget_mi.draw_epoch(pixels, order, 4, 50, noise, _gen(1))
    reference = _gen(1)
    expected_noisy, expected_ids = [], []
    for start in range(0, 11, 4):  # what each step drew before the epoch's draws were made up front
        idx = order[start : start + 4]
        expected_noisy.append(data.noisy_images(pixels[idx], 0.0, 0.3, reference))
        expected_ids.append(torch.randint(50, (len(idx),), generator=reference))
    assert torch.equal(noisy, torch.cat(expected_noisy))
    assert torch.equal(retain_ids, torch.cat(expected_ids))
    assert noisy.shape == pixels.shape and retain_ids.shape == (11,)
