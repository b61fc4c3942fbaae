"""Model inputs: encoded sets, tokenisation and the perturbations of FORGET_MI.md §3.

An :class:`Encoded` holds a set's model inputs in memory: ``pixels`` are the model's input (the
image after the model's preprocessing, :mod:`forgetmi_trainer.preprocess`), as a Hugging Face
image processor outputs it. Images are read by :mod:`forgetmi_trainer.images` and streamed by
:mod:`forgetmi_trainer.streaming`. The perturbations apply to the forget inputs only; the image
noise is added to the [0, 1] image, before normalisation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.tokenizer import words

# Clinical keywords the text perturbation masks (FORGET_MI.md §3): common chest X-ray findings and
# the class words of the generated dataset (``synthetic.CLASS_WORDS``; a test keeps them included).
CLINICAL_KEYWORDS = frozenset(
    {"edema", "lung", "lungs", "atelectasis", "cardiomegaly", "pneumothorax", "effusion", "opacity",
     "pleural", "heart", "clear", "normal", "unremarkable", "congestion", "vascular", "cephalization",
     "interstitial", "kerley", "septal", "alveolar", "consolidation", "airspace"}
)


@dataclass
class Encoded:
    """Model inputs for a set of samples: pixels (N, C, H, W), ids and mask (N, L), labels (N,)."""

    pixels: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    FIELDS: ClassVar[tuple[str, ...]] = ("pixels", "input_ids", "attention_mask", "labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor | np.ndarray) -> Encoded:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Encoded(self.pixels[idx], self.input_ids[idx], self.attention_mask[idx], self.labels[idx])

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(*(t.to(device) for t in (self.pixels, self.input_ids, self.attention_mask, self.labels)))


BATCH_PIXELS = 4 * 1024 * 1024
"""Pixel values a no-grad pass over many images takes at once: its activations stay bounded at any size."""


def bounded_batch(per_image: int, most: int) -> int:
    """At most ``most`` images of ``per_image`` pixel values each, and no more than :data:`BATCH_PIXELS` values."""
    return max(1, min(most, BATCH_PIXELS // max(per_image, 1)))


def text_length(tokenizer: object, default: int = 32) -> int:
    """The length reports are padded or cut to: the tokenizer's ``model_max_length`` (saved with the
    model), at most 512."""
    return min(int(getattr(tokenizer, "model_max_length", default) or default), 512)


def tokenize(tokenizer: object, texts: list[str], max_length: int = 32) -> tuple[Tensor, Tensor]:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    return enc["input_ids"], enc["attention_mask"]


# --- perturbations (FORGET_MI.md §3): forget inputs only -------------------------------------


def noisy_images(
    pixels: Tensor, mean: float, std: float, generator: torch.Generator, preprocessing: ImagePreprocessing | None = None
) -> Tensor:
    """i.i.d. Gaussian noise per pixel of the [0, 1] image, then clip to [0, 1]; a new draw on every call.

    ``pixels`` are model inputs: with a normalising ``preprocessing`` they are taken back to the
    [0, 1] image first and normalised again after the noise. The noise is drawn on the
    generator's device and then moved to the pixels' (torch refuses a CPU generator for a CUDA
    draw), so a seed gives the same noise on CPU and GPU."""
    normalised = preprocessing is not None and preprocessing.do_normalize
    unit = preprocessing.unnormalize(pixels) if normalised else pixels  # type: ignore[union-attr]
    noise = torch.randn(unit.shape, generator=generator, device=generator.device).to(unit.device) * std + mean
    noisy = (unit + noise).clamp(0.0, 1.0)
    return preprocessing.normalize(noisy) if normalised else noisy  # type: ignore[union-attr]


def perturb_text(text: str, level: float, rng: random.Random, mask_token: str = "[MASK]") -> str:
    """Mask up to two clinical keywords, then with probability 1/2 word noise (delete, repeat or
    swap each word with probability ``level``) or else character noise (insert, delete,
    substitute or transpose one character of each word with probability ``level``)."""
    tokens = words(text)
    keyword_positions = [i for i, w in enumerate(tokens) if w in CLINICAL_KEYWORDS]
    for i in rng.sample(keyword_positions, k=min(2, len(keyword_positions))):
        tokens[i] = mask_token
    if rng.random() < 0.5:
        tokens = _word_noise(tokens, level, rng, mask_token)
    else:
        tokens = [_char_noise(w, rng) if w != mask_token and rng.random() < level else w for w in tokens]
    return " ".join(tokens)


def _word_noise(tokens: list[str], level: float, rng: random.Random, mask_token: str) -> list[str]:
    out: list[str] = []
    for w in tokens:
        if w == mask_token or rng.random() >= level:
            out.append(w)
            continue
        op = rng.choice(("delete", "repeat", "swap"))
        if op == "repeat":
            out += [w, w]
        elif op == "swap" and out:
            out.insert(len(out) - 1, w)
    return out or tokens[:1]


def _char_noise(word: str, rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = rng.randrange(len(word))
    op = rng.choice(("insert", "delete", "substitute", "transpose"))
    if op == "insert":
        return word[:i] + rng.choice(letters) + word[i:]
    if op == "delete" and len(word) > 1:
        return word[:i] + word[i + 1 :]
    if op == "transpose" and len(word) > 1:
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + rng.choice(letters) + word[i + 1 :]


def noisy_text_pool(texts: list[str], level: float, copies: int, seed: int, mask_token: str) -> list[list[str]]:
    """``copies`` seeded perturbations of every text: pool[k][i] is copy k of text i."""
    rng = random.Random(seed)
    return [[perturb_text(t, level, rng, mask_token) for t in texts] for _ in range(copies)]
