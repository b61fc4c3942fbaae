"""Scoring a model (FORGET_MI.md §5): image-head logits on the forget, retain and test sets →
macro one-vs-rest ROC AUC, macro F1 and the membership-inference audit.

:func:`model_metrics` runs the model (:func:`image_logits`); every metric below it is pure
numpy + scikit-learn on logits already computed. Every metric returns ``None`` when it cannot
be measured on the given samples (an empty split, a single class), so a report never carries a
number that means nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from forgetmi_trainer import mia
from forgetmi_trainer.contract import ModelMetrics, SplitMetrics
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import autocast


def model_metrics(
    model: MultimodalClassifier, forget: Encoded, retain: Encoded, test: Encoded, *, seed: int, precision: str = "fp32"
) -> tuple[ModelMetrics, np.ndarray]:
    """AUC/F1 on forget and test and the four MIA numbers; also returns the retain logits (N, C)."""
    f, r, t = (image_logits(model, d, precision=precision) for d in (forget, retain, test))
    yf, yr, yt = (d.labels.cpu().numpy() for d in (forget, retain, test))
    split = split_metrics(f, yf, t, yt)
    audit = mia.audit(
        mia.per_sample_losses(r, yr), yr, mia.per_sample_losses(t, yt), yt, mia.per_sample_losses(f, yf), yf, seed=seed
    )
    return ModelMetrics(split=split, mia=audit), r


@torch.no_grad()
def image_logits(
    model: MultimodalClassifier, data: Encoded, *, precision: str = "fp32", batch_size: int = 512
) -> np.ndarray:
    """Image-head logits (N, C) as float64."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(data), batch_size):
        b = data.take(torch.arange(start, min(start + batch_size, len(data)))).to(device)
        with autocast(device, precision):
            chunks.append(model(b.pixels, b.input_ids, b.attention_mask).image_logits.float().cpu())
    return torch.cat(chunks).double().numpy()


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
    """Macro F1 of predicted class indices over *all* ``num_classes`` classes.

    ``labels`` (N,), ``preds`` (N,) integer class indices. A class absent from both labels
    and predictions scores 0 (scikit-learn's ``zero_division=0``), so every split is
    averaged over the same C classes. ``None`` for an empty set.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes}")
    y = _as_labels(labels, num_classes)
    p = _as_labels(preds, num_classes, what="preds", n=y.shape[0])
    if y.size == 0:
        return None
    return float(f1_score(y, p, average="macro", labels=list(range(num_classes)), zero_division=0))


def split_metrics(
    forget_logits: np.ndarray, forget_labels: np.ndarray, test_logits: np.ndarray, test_labels: np.ndarray
) -> SplitMetrics:
    """AUC and F1 of the image head on the forget and test splits; logits (N, C), labels (N,)."""
    forget_auc, forget_f1 = _auc_f1(forget_logits, forget_labels, "forget_logits")
    test_auc, test_f1 = _auc_f1(test_logits, test_labels, "test_logits")
    return SplitMetrics(forget_auc=forget_auc, forget_f1=forget_f1, test_auc=test_auc, test_f1=test_f1)


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


def _auc_f1(logits: np.ndarray, labels: np.ndarray, what: str) -> tuple[float | None, float | None]:
    x = _as_logits(logits, what)
    if x.shape[0] == 0:
        return None, None
    probs = softmax(x)
    return macro_auc(labels, probs), macro_f1(labels, probs.argmax(axis=1), x.shape[1])


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
