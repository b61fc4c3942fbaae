"""MultimodalClassifier forward shapes, the fusion gate against a plain computation, seeding."""

from __future__ import annotations

import pytest
import torch

from forgetmi_trainer.model import FusionGate, MultimodalConfig, build_model, tiny_bert_config

VOCAB = 50
RESNET = {"model_type": "resnet", "num_channels": 1, "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}


def _inputs(batch: int = 3, length: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 1, 16, 16, generator=g)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 6:] = 0
    return pixels, ids, mask


@pytest.mark.parametrize(
    "encoder",
    [
        {"image_encoder": "cnn"},
        {"image_encoder": "transformers", "image_encoder_config": RESNET},
    ],
    ids=["cnn", "resnet"],
)
def test_forward_shapes(encoder: dict) -> None:
    config = MultimodalConfig(num_labels=4, embed_dim=24, text_encoder_config=tiny_bert_config(VOCAB), **encoder)
    model = build_model(config, seed=0).eval()
    pixels, ids, mask = _inputs()
    labels = torch.tensor([0, 1, 3])
    out = model(pixels, ids, mask, labels=labels)
    for name in ("image_embeds", "text_embeds", "joint_embeds"):
        assert getattr(out, name).shape == (3, 24), name
    assert out.image_logits.shape == (3, 4)
    assert out.text_logits.shape == (3, 4)
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model(pixels, ids, mask).loss is None


def test_transformers_image_encoder_needs_config() -> None:
    with pytest.raises(ValueError, match="image_encoder_config"):
        MultimodalConfig(image_encoder="transformers")


def test_fusion_gate_matches_plain_computation() -> None:
    torch.manual_seed(1)
    d, beta = 6, 0.5
    gate = FusionGate(d, beta).eval()
    with torch.no_grad():
        for p in gate.norm.parameters():  # non-trivial affine LayerNorm
            p.add_(torch.randn_like(p) * 0.3)
    a, t = torch.randn(5, d), torch.randn(5, d)
    a[1] *= 100.0  # large |a|: kappa saturates at 1 for this row
    with torch.no_grad():
        got = gate(a, t)
        w1, b1 = gate.gate.weight, gate.gate.bias
        w2, b2 = gate.mix.weight, gate.mix.bias
        rows = []
        kappas = []
        for i in range(5):
            ai, ti = a[i], t[i]
            g = torch.sigmoid(w1 @ torch.cat([ai, ti]) + b1)
            h = w2 @ torch.cat([ai, g * ti]) + b2
            kappa = min(beta * float(ai.norm()) / float(h.norm()), 1.0)
            kappas.append(kappa)
            x = ai + kappa * h
            mu, var = x.mean(), x.var(unbiased=False)
            rows.append((x - mu) / torch.sqrt(var + gate.norm.eps) * gate.norm.weight + gate.norm.bias)
        want = torch.stack(rows)
    assert kappas[1] == 1.0 and min(kappas) < 1.0  # both branches of the min are exercised
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (5, d)


def test_build_model_same_seed_same_weights() -> None:
    config = MultimodalConfig(text_encoder_config=tiny_bert_config(VOCAB))
    a, b = build_model(config, seed=7).state_dict(), build_model(config, seed=7).state_dict()
    c = build_model(config, seed=8).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_model_does_not_disturb_global_rng() -> None:
    config = MultimodalConfig(text_encoder_config=tiny_bert_config(VOCAB))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    build_model(config, seed=0)
    assert torch.equal(torch.rand(4), expected)


def test_config_json_round_trip_keeps_num_labels(tmp_path) -> None:
    config = MultimodalConfig(num_labels=3, embed_dim=16, text_encoder_config=tiny_bert_config(VOCAB))
    config.to_json_file(str(tmp_path / "config.json"))
    again = MultimodalConfig.from_json_file(str(tmp_path / "config.json"))
    assert again.num_labels == 3
    assert again.embed_dim == 16
    assert again.text_encoder_config == config.text_encoder_config
