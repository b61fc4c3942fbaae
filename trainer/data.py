"""Model inputs: images, encoded sets, tokenisation and the perturbations of FORGET_MI.md §3.

An ``image_uri`` (a manifest column, :mod:`forgetmi_trainer.manifest`) is a ``.npy`` file or an
array in an ``.npz`` archive (``.../shard-000.npz#sample_id``); images are scaled to [0, 1].
The perturbations apply to the forget inputs only.
"""

from __future__ import annotations

import io
import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forgetmi_trainer import storage
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.tokenizer import words

# Clinical keywords the text perturbation masks (FORGET_MI.md §3): common chest X-ray findings and
# the class words of the generated dataset (``synthetic.CLASS_WORDS``; a test keeps them included).
CLINICAL_KEYWORDS = frozenset(
    {"edema", "lung", "lungs", "atelectasis", "cardiomegaly", "pneumothorax", "effusion", "opacity",
     "pleural", "heart", "clear", "normal", "unremarkable", "congestion", "vascular", "cephalization",
     "interstitial", "kerley", "septal", "alveolar", "consolidation", "airspace"}
)


def load_images(uris: list[str]) -> np.ndarray:
    """Images (N, C, H, W) float32 in [0, 1]; each archive is read once."""
    by_archive: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, uri in enumerate(uris):
        base, _, key = uri.partition("#")
        by_archive[base].append((i, key))
    images: list[np.ndarray | None] = [None] * len(uris)
    for base, items in by_archive.items():
        raw = storage.read_bytes(base)
        try:
            if base.endswith(".npz"):
                with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
                    for i, key in items:
                        if key not in archive.files:
                            raise InputError(f"Image archive {base} has no array {key!r}.")
                        images[i] = archive[key]
            elif base.endswith(".npy"):
                array = np.load(io.BytesIO(raw), allow_pickle=False)
                for i, _ in items:
                    images[i] = array
            else:
                raise InputError(f"Image {base} has an unsupported format; use .npy or .npz#<key>.")
        except (ValueError, OSError) as err:
            raise InputError(f"Image {base} could not be decoded ({err}).") from err
    return np.stack([_to_unit(img, uris[i]) for i, img in enumerate(images)])  # type: ignore[arg-type]


def _to_unit(image: np.ndarray, uri: str) -> np.ndarray:
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise InputError(f"Image {uri} has shape {image.shape}; expected (H, W) or (C, H, W).")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


@dataclass
class Encoded:
    """Model inputs for a set of samples: pixels (N, C, H, W), ids and mask (N, L), labels (N,)."""

    pixels: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor | np.ndarray) -> Encoded:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Encoded(self.pixels[idx], self.input_ids[idx], self.attention_mask[idx], self.labels[idx])

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(*(t.to(device) for t in (self.pixels, self.input_ids, self.attention_mask, self.labels)))


def tokenize(tokenizer: object, texts: list[str], max_length: int = 32) -> tuple[Tensor, Tensor]:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    return enc["input_ids"], enc["attention_mask"]


def encode(
    images: np.ndarray, texts: list[str], labels: np.ndarray, tokenizer: object, max_length: int = 32
) -> Encoded:
    ids, mask = tokenize(tokenizer, texts, max_length)
    return Encoded(torch.from_numpy(images).float(), ids, mask, torch.from_numpy(labels).long())


# --- perturbations (FORGET_MI.md §3): forget inputs only -------------------------------------


def noisy_images(pixels: Tensor, mean: float, std: float, generator: torch.Generator) -> Tensor:
    """i.i.d. Gaussian noise per pixel, then clip to [0, 1]; a new draw on every call.

    The noise is drawn on the generator's device and then moved to the pixels' (torch refuses a
    CPU generator for a CUDA draw), so a seed gives the same noise on CPU and GPU."""
    noise = torch.randn(pixels.shape, generator=generator, device=generator.device).to(pixels.device) * std + mean
    return (pixels + noise).clamp(0.0, 1.0)


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
