"""Images, encoding and the perturbations of FORGET_MI.md §3."""

from __future__ import annotations

import random

import torch

from forgetmi_trainer import data
from forgetmi_trainer.data import CLINICAL_KEYWORDS


def test_noisy_images_clip_and_redraw() -> None:
    pixels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels[0] = 0.0
    pixels[1] = 1.0
    gen = torch.Generator().manual_seed(1)
    a = data.noisy_images(pixels, 0.0, 0.5, gen)
    b = data.noisy_images(pixels, 0.0, 0.5, gen)
    assert a.shape == pixels.shape
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0
    assert not torch.equal(a, b)  # a new draw on every call
    again = data.noisy_images(pixels, 0.0, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, again)  # but seeded
    assert torch.equal(data.noisy_images(pixels, 0.0, 0.0, gen), pixels)
    small = data.noisy_images(torch.full((1, 1, 64, 64), 0.5), 0.0, 0.1, gen)
    assert abs(float(small.std()) - 0.1) < 0.02 and abs(float(small.mean()) - 0.5) < 0.02


def test_noisy_images_draw_from_the_generators_stream() -> None:
    # The noise is the generator's own draw (on its device), moved to the pixels afterwards: what
    # lets a CPU generator feed CUDA pixels (tests/trainer/test_gpu.py checks that on a GPU).
    pixels = torch.full((2, 1, 8, 8), 0.5)
    expected = (pixels + torch.randn(pixels.shape, generator=torch.Generator().manual_seed(3)) * 0.1).clamp(0.0, 1.0)
    assert torch.equal(data.noisy_images(pixels, 0.0, 0.1, torch.Generator().manual_seed(3)), expected)


TEXT = "mild edema in both lungs with pleural effusion and atelectasis near heart size stable"


def test_perturb_text_masks_at_most_two_keywords() -> None:
    n_keywords = sum(w in CLINICAL_KEYWORDS for w in TEXT.split())
    assert n_keywords >= 4
    for seed in range(30):
        # level 0: only the masking happens, so it can be checked exactly
        out = data.perturb_text(TEXT, 0.0, random.Random(seed))
        words = out.split()
        assert words.count("[MASK]") == 2
        assert len(words) == len(TEXT.split())
        masked = [w for w, o in zip(TEXT.split(), words, strict=True) if o == "[MASK]"]
        assert all(w in CLINICAL_KEYWORDS for w in masked)
        assert sum(w in CLINICAL_KEYWORDS for w in words) == n_keywords - 2
    assert data.perturb_text("one edema only", 0.0, random.Random(0)).split().count("[MASK]") == 1
    assert data.perturb_text("no keywords here", 0.0, random.Random(0)) == "no keywords here"


def test_perturb_text_is_deterministic_per_seed_and_noisy() -> None:
    outs = [data.perturb_text(TEXT, 0.5, random.Random(seed), mask_token="<m>") for seed in range(10)]
    again = [data.perturb_text(TEXT, 0.5, random.Random(seed), mask_token="<m>") for seed in range(10)]
    assert outs == again
    assert len(set(outs)) > 5
    assert all(1 <= o.split().count("<m>") <= 2 for o in outs)
    assert all(o.replace("<m>", "") != TEXT for o in outs)


def test_noisy_text_pool_is_deterministic() -> None:
    texts = [TEXT, "clear lungs no effusion", "stable"]
    pool = data.noisy_text_pool(texts, 0.5, 3, seed=4, mask_token="[MASK]")
    assert pool == data.noisy_text_pool(texts, 0.5, 3, seed=4, mask_token="[MASK]")
    assert len(pool) == 3 and all(len(copy) == 3 for copy in pool)
    assert pool != data.noisy_text_pool(texts, 0.5, 3, seed=5, mask_token="[MASK]")
    assert len({copy[0] for copy in pool}) > 1  # copies differ
