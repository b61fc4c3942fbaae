"""Scoring a model (FORGET_MI.md §5) from its image-head logits on the forget, retain, test and validation
sets: macro one-vs-rest ROC AUC, macro F1 and the membership-inference audit (:mod:`~forgetmi_trainer.mia`),
each with a 95 % interval.

Everything here is pure numpy + scikit-learn on logits already computed (running the model over the
streamed sets is :mod:`~forgetmi_trainer.inference`'s). Forget, test and validation are scored in full;
the retain side is :func:`retain_sample`'s sample, drawn once per run and the same for every model.
Every metric returns ``None`` when it cannot be measured on the given samples (an empty split, a
single class), so a report never carries a number that means nothing; an interval is ``None``
wherever its figure is (and see :mod:`~forgetmi_trainer.bootstrap` for when else).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from forgetmi_trainer import mia
from forgetmi_trainer.bootstrap import Draw, Figures, MacroAuc, Side
from forgetmi_trainer.bootstrap import intervals as bootstrap_intervals
from forgetmi_trainer.bootstrap import macro_f1 as macro_f1_replicates
from forgetmi_trainer.contract import ModelMetrics, SplitMetrics
from forgetmi_trainer.lira import LiraInputs


@dataclass(frozen=True)
class Scored:
    """One split as the audit sees it: image-head logits (N, C), class indices (N,) and integer patient
    codes (N,) — codes only, so no subject ID ever reaches the audit; samples of one patient share a code."""

    logits: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        x = _as_logits(self.logits, "logits")
        y = _as_labels(self.labels, x.shape[1], n=x.shape[0])
        g = np.asarray(self.groups)
        if g.shape != (x.shape[0],) or (g.size and not np.issubdtype(g.dtype, np.integer)):
            raise ValueError(f"groups must be {x.shape[0]} integer patient codes; got shape {g.shape}, dtype {g.dtype}")
        for name, value in (("logits", x), ("labels", y), ("groups", g.astype(np.int64))):
            object.__setattr__(self, name, value)


def model_metrics(forget: Scored, retain: Scored, test: Scored, *, validation: Scored, seed: int, bootstrap: int,
                  lira: LiraInputs | None = None) -> ModelMetrics:
    """AUC/F1 on forget and test and every MIA figure of one model, each with its 95 % interval from
    ``bootstrap`` replicates that resample patients (0: no intervals), seeded by ``seed``; the same seed and
    patients give every model the same replicates. ``retain`` (the audit's retain sample, members) and
    ``validation`` (the validation patients V, non-members) only train the paper's SVC, so they are not
    resampled; the attacks compare forget with ``test`` (T). ``lira``: reference statistics aligned with
    the forget and test rows (None: the LiRA figures are None). The four splits share their C classes."""
    splits = {"forget": forget, "retain": retain, "test": test, "validation": validation}
    if len({s.logits.shape[1] for s in splits.values()}) > 1:
        shapes = ", ".join(f"{name} {s.logits.shape}" for name, s in splits.items())
        raise ValueError(f"forget, retain, test and validation logits must have as many classes; got {shapes}")
    split = split_metrics(forget.logits, forget.labels, test.logits, test.labels)
    audit, mia_figures = mia.audit_figures(forget, retain, test, validation, seed=seed, references=lira)
    figures = [*_split_figures(split, forget, test), *mia_figures]
    cis = bootstrap_intervals(figures, {"forget": forget.groups, "test": test.groups}, seed=seed,
                              replicates=bootstrap)
    return ModelMetrics.model_validate({
        "split": {**split.model_dump(), **{f"{k}_ci": v for k, v in cis.items() if k in SplitMetrics.model_fields}},
        "mia": {**audit, **{f"{k}_ci": v for k, v in cis.items() if k in audit}},
    })


def _split_figures(points: SplitMetrics, forget: Scored, test: Scored) -> list[Figures]:
    """The measured split metrics as bootstrap figures: forget figures resample forget patients, test
    figures test patients."""
    figures: list[Figures] = []
    sides: tuple[tuple[Side, Scored], ...] = (("forget", forget), ("test", test))
    for side, scored in sides:
        probs = softmax(scored.logits)
        auc, f1 = getattr(points, f"{side}_auc"), getattr(points, f"{side}_f1")
        if auc is not None:
            macro = MacroAuc.of(scored.labels, probs)
            figures.append(Figures({f"{side}_auc": auc}, (side,), partial(_auc_replicates, macro, side)))
        if f1 is not None:
            f1_of = partial(_f1_replicates, scored.labels, probs.argmax(axis=1), probs.shape[1], side)
            figures.append(Figures({f"{side}_f1": f1}, (side,), f1_of))
    return figures


def _auc_replicates(macro: MacroAuc, side: Side, draws: Mapping[Side, Draw]) -> dict[str, np.ndarray]:
    return {f"{side}_auc": macro(draws[side])}


def _f1_replicates(labels: np.ndarray, preds: np.ndarray, num_classes: int, side: Side,
                   draws: Mapping[Side, Draw]) -> dict[str, np.ndarray]:
    return {f"{side}_f1": macro_f1_replicates(labels, preds, num_classes, draws[side])}


def retain_sample(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``k`` rows of ``labels`` (N,), class-stratified: each class gets its
    share of ``k`` in proportion to its count (largest remainders), at least one row while ``k`` allows
    (when ``k`` is below the number of classes, one row of each of the ``k`` most frequent), never more
    than it has; rows drawn without replacement with ``seed``. All rows when ``k >= N``. It depends on
    the labels, ``k`` and the seed only, so one draw serves every model of a run."""
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D array of class indices; got shape {y.shape}, dtype {y.dtype}")
    if k < 1:
        raise ValueError(f"the retain sample needs k of at least 1; got {k}")
    if k >= y.size:
        return np.arange(y.size)
    classes, counts = np.unique(y, return_counts=True)
    take = _allocation(counts, k)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=int(n), replace=False)
              for c, n in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def _allocation(counts: np.ndarray, k: int) -> np.ndarray:
    """Rows per class (largest-remainder shares of ``k`` < sum(counts), each at least 1, summing to ``k``)."""
    if k < counts.size:
        take = np.zeros_like(counts)
        take[np.argsort(-counts, kind="stable")[:k]] = 1
        return take
    quota = k * counts / counts.sum()
    take = np.maximum(1, np.floor(quota)).astype(np.int64)
    while take.sum() > k:  # the minimum of one row pushed the total over k: trim the most over-allocated
        over = np.where(take > 1, take - quota, -np.inf)
        take[int(np.argmax(over))] -= 1
    short = k - int(take.sum())
    room = np.where(take < counts, quota - take, -np.inf)
    take[np.argsort(-room, kind="stable")[:short]] += 1
    return take


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, (N, C) -> (N, C) float64; stable for large logits."""
    x = _as_logits(logits, "logits")
    shifted = x - x.max(axis=1, keepdims=True) if x.shape[0] else x
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC: the mean over the classes *present in labels* of the binary
    AUC of "class c" vs "any other class" scored by ``probs[:, c]``.

    ``labels`` (N,) integer class indices in ``[0, C)``; ``probs`` (N, C) softmax
    probabilities. Classes absent from ``labels`` are skipped (their one-vs-rest AUC is
    undefined, as scikit-learn requires), so a forget set that holds only some classes is
    scored on those. ``None`` when fewer than 2 classes are present (unmeasurable).
    With 2 classes present in a 2-class problem this equals the binary AUC.
    """
    p = _as_logits(probs, "probs")
    y = _as_labels(labels, p.shape[1], n=p.shape[0])
    present = np.unique(y)
    if present.size < 2:
        return None
    aucs = [roc_auc_score(y == c, p[:, c]) for c in present]
    return float(np.mean(aucs))


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float | None:
    """Macro F1 of predicted class indices over the classes present in ``labels`` or ``preds``
    (scikit-learn's default), so a class a small forget set lacks does not cost 1/C. ``labels`` (N,),
    ``preds`` (N,) integer class indices in ``[0, num_classes)``. ``None`` for an empty set."""
    y, p = _labels_and_preds(labels, preds, num_classes)
    return None if y.size == 0 else float(f1_score(y, p, average="macro", zero_division=0))


def macro_f1_all_classes(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float | None:
    """Macro F1 over *all* ``num_classes`` classes, a class absent from labels and predictions scoring 0
    (``zero_division=0``): every split averaged over the same C classes. ``None`` for an empty set."""
    y, p = _labels_and_preds(labels, preds, num_classes)
    if y.size == 0:
        return None
    return float(f1_score(y, p, average="macro", labels=list(range(num_classes)), zero_division=0))


def _labels_and_preds(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes}")
    y = _as_labels(labels, num_classes)
    return y, _as_labels(preds, num_classes, what="preds", n=y.shape[0])


def split_metrics(
    forget_logits: np.ndarray, forget_labels: np.ndarray, test_logits: np.ndarray, test_labels: np.ndarray
) -> SplitMetrics:
    """AUC and F1 (present classes, and all C) of the image head on the forget and test splits; logits
    (N, C), labels (N,)."""
    forget = _auc_f1(forget_logits, forget_labels, "forget_logits")
    test = _auc_f1(test_logits, test_labels, "test_logits")
    return SplitMetrics(forget_auc=forget[0], forget_f1=forget[1], forget_f1_all_classes=forget[2],
                        test_auc=test[0], test_f1=test[1], test_f1_all_classes=test[2])


def logit_distance(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """``1 - mean cos(logits_a[i], logits_b[i])`` over samples, (N, C), (N, C) -> float in [0, 2].

    0 when every pair points the same way (e.g. an unlearned and a retrained model that agree).
    A zero logit vector has cosine 0 with anything.
    """
    a = _as_logits(logits_a, "logits_a")
    b = _as_logits(logits_b, "logits_b")
    if a.shape != b.shape:
        raise ValueError(f"logits_a and logits_b must have the same shape; got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("logit_distance needs at least one sample; got none")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return float(1.0 - np.clip(cos, -1.0, 1.0).mean())


def _auc_f1(logits: np.ndarray, labels: np.ndarray, what: str) -> tuple[float | None, float | None, float | None]:
    x = _as_logits(logits, what)
    if x.shape[0] == 0:
        return None, None, None
    probs = softmax(x)
    preds, c = probs.argmax(axis=1), x.shape[1]
    return macro_auc(labels, probs), macro_f1(labels, preds, c), macro_f1_all_classes(labels, preds, c)


def _as_logits(values: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{what} must be a 2-D array of shape (samples, classes); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold non-finite values (NaN or inf)")
    return x


def _as_labels(values: np.ndarray, c: int, what: str = "labels", n: int | None = None) -> np.ndarray:
    """Validate class indices (N,): 1-D, integer, in ``[0, c)``, and ``n`` of them when given."""
    y = np.asarray(values)
    if y.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices; got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integer class indices; got dtype {y.dtype}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{what} hold {y.shape[0]} samples but {n} were expected")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{what} must lie in [0, {c}); got values from {y.min()} to {y.max()}")
    return y.astype(np.int64)
