"""The audit's 95 % intervals: a seeded bootstrap over patients, vectorised over its replicates.

One replicate draws a split's P patients P times with replacement (forget and test each on their own,
from their own seeded stream) and weights every sample by how often its patient was drawn, so a
patient's samples always move together: the interval reflects how many *patients* a figure rests on,
not how many images. Each figure is recomputed with those weights; the weighted AUC, F1 and TPR below
are exact (a weight of 2 counts the sample twice) and equal the plain figures when every weight is 1.
The interval is the 2.5th and 97.5th percentiles of the replicates, widened where needed to contain
the figure itself (a percentile interval need not), so a gate on a bound is never laxer than one on
the point. It is None with fewer than :data:`MIN_PATIENTS` patients in a split the figure resamples,
or when fewer than :data:`MIN_DEFINED` of the replicates can measure the figure (e.g. a resample that
holds one class only): too little to say anything, so a gate on it is Inconclusive.

Replicates are drawn and scored in chunks of at most :data:`CHUNK_ELEMENTS` sample weights, so memory
stays bounded however large the test split is, and the chunking does not change them. The same seed
and patient codes give the same replicates for every model, so the intervals of the original and of
the candidate come from the same resampled patients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from forgetmi_trainer.contract import Interval

LEVEL = 0.95
MIN_PATIENTS = 2
MIN_DEFINED = 0.95
CHUNK_ELEMENTS = 2_000_000
Side = Literal["forget", "test"]
STREAMS: dict[Side, int] = {"forget": 1, "test": 2}


@dataclass(frozen=True)
class Draw:
    """One chunk of b replicates of a split: how often each patient was drawn (b, P), and each sample's
    patient (N,) as a column of ``counts``."""

    counts: np.ndarray
    patient: np.ndarray

    def weights(self, order: np.ndarray | None = None) -> np.ndarray:
        """(b, N) sample weights, the samples taken in ``order`` when given."""
        return np.take(self.counts, self.patient if order is None else self.patient[order], axis=1)

    def per_patient(self, values: np.ndarray) -> np.ndarray:
        """(b, ...) weighted sums of per-sample ``values`` (N, ...): each patient's sum times its count."""
        sums = np.zeros((self.counts.shape[1], *values.shape[1:]))
        np.add.at(sums, self.patient, values)
        return self.counts @ sums.reshape(sums.shape[0], -1)

    def by_patient(self) -> Draw:
        """The same replicates with one sample per patient (patient ``i`` = the ``i``-th sorted code)."""
        return Draw(self.counts, np.arange(self.counts.shape[1]))

    def join(self, other: Draw) -> Draw:
        """This split's samples followed by ``other``'s, as one draw."""
        return Draw(np.concatenate([self.counts, other.counts], axis=1),
                    np.r_[self.patient, other.patient + self.counts.shape[1]])


Statistic = Callable[[Mapping[Side, Draw]], Mapping[str, np.ndarray]]
"""The draws of a group's sides -> each figure's (b,) replicate values, NaN where one cannot be measured."""


@dataclass(frozen=True)
class Figures:
    """Measured figures bootstrapped together: their values, the splits they resample, their replicates."""

    points: Mapping[str, float]
    sides: tuple[Side, ...]
    replicates: Statistic


class PatientResampler:
    """Draws replicates of one split from its own seeded stream."""

    def __init__(self, groups: np.ndarray, seed: int, side: Side) -> None:
        codes = np.asarray(groups)
        if codes.ndim != 1:
            raise ValueError(f"{side} groups must be a 1-D array of patient codes; got shape {codes.shape}")
        _, inverse = np.unique(codes, return_inverse=True)
        self.patient = inverse.reshape(-1)
        self.patients = int(self.patient.max()) + 1 if codes.size else 0
        self.samples = int(codes.size)
        self._rng = np.random.default_rng([seed, STREAMS[side]])

    def draw(self, replicates: int) -> Draw:
        p = self.patients
        picks = self._rng.integers(0, p, size=(replicates, p)) + p * np.arange(replicates)[:, None]
        counts = np.bincount(picks.reshape(-1), minlength=replicates * p).reshape(replicates, p)
        return Draw(counts.astype(np.float64), self.patient)


def intervals(groups: Sequence[Figures], patients: Mapping[Side, np.ndarray], *, seed: int,
              replicates: int) -> dict[str, Interval | None]:
    """The 95 % interval of every figure from ``replicates`` resamples of the patients of each split
    (patient codes (N,) per side); None where it has none (see the module docstring)."""
    if replicates < 0:
        raise ValueError(f"bootstrap replicates must not be negative; got {replicates}")
    resamplers = {side: PatientResampler(patients[side], seed, side) for side in sorted(patients)}
    usable = [g for g in groups if replicates > 0 and
              all(side in resamplers and resamplers[side].patients >= MIN_PATIENTS for side in g.sides)]
    needed = sorted({side for g in usable for side in g.sides})
    values: dict[str, list[np.ndarray]] = {name: [] for g in usable for name in g.points}
    step = max(1, min(replicates, CHUNK_ELEMENTS // max(1, sum(resamplers[s].samples for s in needed))))
    for start in range(0, replicates if usable else 0, step):
        drawn = {side: resamplers[side].draw(min(step, replicates - start)) for side in needed}
        for g in usable:
            for name, chunk in g.replicates({side: drawn[side] for side in g.sides}).items():
                values[name].append(chunk)
    out: dict[str, Interval | None] = {name: None for g in groups for name in g.points}
    for g in usable:
        for name, point in g.points.items():
            out[name] = percentile_interval(np.concatenate(values[name]), point)
    return out


def percentile_interval(values: np.ndarray, point: float) -> Interval | None:
    """The 95 % percentile interval of replicate ``values`` (NaN = unmeasurable), widened to hold ``point``."""
    defined = values[~np.isnan(values)]
    if values.size == 0 or defined.size < MIN_DEFINED * values.size:
        return None
    tail = (1.0 - LEVEL) / 2
    low, high = np.quantile(defined, [tail, 1.0 - tail])
    return Interval(low=float(np.clip(min(low, point), 0.0, 1.0)), high=float(np.clip(max(high, point), 0.0, 1.0)))


def cumulative(weights: np.ndarray) -> np.ndarray:
    """(b, N) -> (b, N + 1): column i holds the total weight of the first i samples."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1))
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


@dataclass(frozen=True)
class Ranked:
    """Samples sorted by score once, each positive or negative: the sort ``order``, the sorted positions
    of the positives, and where the run of scores tied with each positive starts (``lo``) and ends (``hi``)."""

    order: np.ndarray
    positives: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    run_starts: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, positive: np.ndarray) -> Ranked:
        if scores.size == 0:
            raise ValueError("a ranking needs at least one score")
        order = np.argsort(scores, kind="stable")
        ranked = scores[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, ranked.size]))
        ends = np.r_[starts[1:], ranked.size]
        positives = np.flatnonzero(np.asarray(positive, dtype=bool)[order])
        return cls(order=order, positives=positives, lo=starts[run[positives]], hi=ends[run[positives]],
                   run_starts=starts)

    def auc(self, weights: np.ndarray, totals: np.ndarray | None = None) -> np.ndarray:
        """Weighted ROC AUC (b,) from sorted weights (b, N) (and their :func:`cumulative`, if at hand):
        a positive beats every negative scored below it and ties half of those tied with it, computed
        from weighted mid-ranks. NaN where the positives or the negatives weigh nothing."""
        c = cumulative(weights) if totals is None else totals
        wp = np.take(weights, self.positives, axis=1)
        ranks = 0.5 * (np.take(c, self.lo, axis=1) + np.take(c, self.hi, axis=1))
        w_pos = wp.sum(axis=1)
        pairs = w_pos * (c[:, -1] - w_pos)
        wins = np.einsum("ij,ij->i", wp, ranks) - 0.5 * w_pos**2  # minus positive-vs-positive "wins"
        return np.divide(wins, pairs, out=np.full(wins.shape, np.nan), where=pairs > 0)


@dataclass(frozen=True)
class MacroAuc:
    """Replicates of the macro one-vs-rest AUC over the classes present (labels (N,), probs (N, C)):
    a class a replicate does not draw is skipped, and fewer than two classes drawn is NaN."""

    classes: tuple[Ranked, ...]

    @classmethod
    def of(cls, labels: np.ndarray, probs: np.ndarray) -> MacroAuc:
        return cls(classes=tuple(Ranked.of(probs[:, c], labels == c) for c in np.unique(labels)))

    def __call__(self, draw: Draw) -> np.ndarray:
        aucs = np.stack([ranked.auc(draw.weights(ranked.order)) for ranked in self.classes], axis=1)
        drawn = (~np.isnan(aucs)).sum(axis=1)
        return np.divide(np.nansum(aucs, axis=1), drawn, out=np.full(drawn.shape, np.nan), where=drawn >= 2)


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int, draw: Draw) -> np.ndarray:
    """Replicates of the macro F1 over the classes a replicate holds in its labels or its predictions
    (scikit-learn's default): ``2 TP / (true + predicted)`` per class with any true or predicted weight."""
    eye = np.eye(num_classes)
    per_sample = np.concatenate([eye[labels], eye[preds], eye[labels] * (labels == preds)[:, None]], axis=1)
    true, pred, hits = np.split(draw.per_patient(per_sample), 3, axis=1)
    present = (true + pred) > 0
    f1 = np.divide(2 * hits, true + pred, out=np.zeros_like(hits), where=present)
    count = present.sum(axis=1)
    return np.divide(f1.sum(axis=1), count, out=np.full(count.shape, np.nan), where=count > 0)


def weighted_mean(values: np.ndarray, draw: Draw) -> np.ndarray:
    """Replicates (b,) of the mean of per-sample ``values`` (N,)."""
    sums = draw.per_patient(np.stack([values, np.ones_like(values)], axis=1))
    return np.divide(sums[:, 0], sums[:, 1], out=np.full(sums.shape[0], np.nan), where=sums[:, 1] > 0)
