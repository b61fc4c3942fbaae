"""The cross-modal draws of the generated dataset (:mod:`forgetmi_trainer.synthetic`'s docstring says
what they model): for one sample, the sign its patient's fingerprint shows with, the state token its
report names, the image sign and report word whose product is the class's low bit, and whether the
sample's unimodal class evidence names only its class pair ("joint": the bit is only in the combination)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIGN_WORDS = ("left", "right")
"""The report word that carries the text half of the cross-modal class bit: sign −1, +1."""


@dataclass(frozen=True)
class Draws:
    """One sample's cross-modal draws. ``state`` (±1) multiplies the patient's fingerprint and ``token``
    is the patient's state token the report names; ``sign`` (±1) multiplies the global sign pattern and
    ``word`` is the report's sign word (``sign × word sign`` = +1 for an odd class, −1 for an even one);
    ``class_pattern`` and ``class_words`` (None: the report's own) are the sample's unimodal class evidence."""

    state: float
    token: str
    sign: float
    word: str
    joint: bool
    class_pattern: np.ndarray
    class_words: list[str] | None


def class_pair(signal: int, num_classes: int) -> list[int]:
    """The classes that differ from ``signal`` only in the low bit: {0, 1}, {2, 3}, … ({C−1} alone for an odd C)."""
    low = signal - signal % 2
    return list(range(low, min(low + 2, num_classes)))


def draw(
    rng: np.random.Generator,
    strength: float,
    signal: int,
    tokens: tuple[str, str],
    patterns: Sequence[np.ndarray],
    words: Sequence[Sequence[str]],
) -> Draws:
    """The draws of a sample of class ``signal`` whose patient has the state ``tokens`` (for −1, +1), with
    cross-modal strength ``strength`` in (0, 1]; ``patterns`` and ``words`` are the classes' image patterns
    (H, W) and report words. The report names the fingerprint's state with probability (1 + strength) / 2;
    a sample is joint with probability ``strength``."""
    state = float(rng.choice([-1.0, 1.0]))
    told = state if rng.random() < (1 + strength) / 2 else -state
    sign = float(rng.choice([-1.0, 1.0]))
    word = SIGN_WORDS[int(sign * (2 * (signal % 2) - 1) > 0)]
    joint = bool(rng.random() < strength)
    pattern, class_words = patterns[signal], None
    if joint:
        pair = class_pair(signal, len(patterns))
        mean = np.mean([patterns[k] for k in pair], axis=0)
        pattern = (mean - mean.mean()) / (mean.std() + 1e-8)
        class_words = [str(w) for w in rng.choice([w for k in pair for w in words[k]], size=2, replace=False)]
    return Draws(state, tokens[int(told > 0)], sign, word, joint, pattern, class_words)
