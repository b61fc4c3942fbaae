"""The sets of a run, by patient: forget (D_f), retain (D_r), validation (V) and test (T).

Training rows of the forget subjects are D_f, the other training rows D_r. The non-member patients
(rows with ``split`` ``val`` or ``test``) split into two disjoint halves with two jobs that must not mix:

- **V** (validation) chooses: the selection rule's stopping point, the membership attacker's
  non-members, any tuning. ``split=val`` rows are V when the manifest has any.
- **T** (test) reports: every figure in the report and every gate reads T only, so what chose the
  checkpoint never grades it.

Without ``val`` rows, the test patients are split here: each patient's class is its most frequent
label (the smallest on a tie), the patients of each class are shuffled with a generator seeded by the
manifest's sha256 and dealt alternately to V and T (the first class's odd patient goes to T, the next
one's to V, and so on), so V and T hold as many patients of every class as can be, and one manifest
version always splits the same way, whatever the forget list. The split's digest (sha256 of the V and T
sample IDs) is in the report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from forgetmi_trainer.contract import SplitInfo
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.manifest import Manifest

MIN_TEST_PATIENTS = 2


@dataclass(frozen=True)
class Sets:
    """Indices into the manifest (int64) of the four sets, the number of forget subjects and the V/T split."""

    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    subjects: int
    info: SplitInfo
    previously_forgotten: int = 0
    previously_forgotten_subjects: int = 0


def resolve(manifest: Manifest, forget_subjects: list[str], previously_forgotten: list[str] | None = None) -> Sets:
    """The sets of a run. Raises :class:`InputError` (naming no patient) when a forget subject has no
    training rows, the forget list is empty, a patient has rows on both sides of train and val/test,
    or too few patients are left for retain, V or T.

    ``previously_forgotten`` (the patients of earlier promoted erasures of the model, from the forget
    ledger) are never retained: their training rows are left out of D_r (and so of a retrain's training
    set). One the forget list names again is forgotten again (its rows are D_f); one the manifest does
    not hold is ignored. Both counts (rows left out, ledger patients in the manifest) go into :class:`Sets`."""
    subjects, splits = np.asarray(manifest.subject_ids), np.asarray(manifest.splits)
    train = splits == "train"
    _check_disjoint(subjects, train)
    known = set(subjects[train].tolist())
    unknown = sum(s not in known for s in forget_subjects)
    if unknown:
        raise InputError(
            f"{unknown} of {len(forget_subjects)} forget subjects have no training samples in the manifest.")
    if not forget_subjects:
        raise InputError("The forget set is empty: the subjects file lists no patient.")
    forgotten = train & np.isin(subjects, list(set(forget_subjects)))
    earlier = train & np.isin(subjects, list(set(previously_forgotten or ())))
    retain = np.flatnonzero(train & ~forgotten & ~earlier)
    if retain.size == 0:
        raise InputError("The manifest needs training samples of patients other than the forgotten ones.")
    validation, test, source = _validation_and_test(manifest, subjects, splits)
    return Sets(forget=np.flatnonzero(forgotten), retain=retain, validation=validation, test=test,
                subjects=len(forget_subjects), info=split_info(manifest, subjects, validation, test, source),
                previously_forgotten=int((earlier & ~forgotten).sum()),
                previously_forgotten_subjects=int(np.unique(subjects[earlier]).size))


def _check_disjoint(subjects: np.ndarray, train: np.ndarray) -> None:
    both = np.intersect1d(subjects[train], subjects[~train]).size
    if both:
        raise InputError(f"{both} patient(s) have rows in both the train split and the val/test splits; "
                         "a patient must be on one side only.")


def _validation_and_test(manifest: Manifest, subjects: np.ndarray,
                         splits: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    declared_val, test_rows = np.flatnonzero(splits == "val"), np.flatnonzero(splits == "test")
    if declared_val.size:
        if test_rows.size == 0:
            raise InputError("The manifest has split=val rows but no split=test rows: T would be empty.")
        return declared_val, test_rows, "manifest"
    patients = np.unique(subjects[test_rows])
    if patients.size < MIN_TEST_PATIENTS:
        raise InputError(f"The manifest has {patients.size} test patient(s) and no split=val rows; at least "
                         f"{MIN_TEST_PATIENTS} are needed to split them into validation and test.")
    in_validation = deal(subjects[test_rows], manifest.labels[test_rows], manifest.sha256)
    return test_rows[in_validation], test_rows[~in_validation], "derived"


def deal(subjects: np.ndarray, labels: np.ndarray, digest: str) -> np.ndarray:
    """(N,) bool: which of these rows (one patient's rows together) go to V; see the module docstring."""
    patients, inverse = np.unique(subjects, return_inverse=True)
    counts = np.zeros((patients.size, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    klass = counts.argmax(axis=1)  # the first maximum: the smallest label on a tie
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"val/{digest}".encode()).digest()[:8], "big"))
    to_validation = np.zeros(patients.size, dtype=bool)
    odd_to_test = True
    for c in np.unique(klass):
        members = rng.permutation(np.flatnonzero(klass == c))
        start = 1 if odd_to_test else 0
        to_validation[members[start::2]] = True
        if members.size % 2:
            odd_to_test = not odd_to_test
    return to_validation[inverse]


def split_info(manifest: Manifest, subjects: np.ndarray, validation: np.ndarray, test: np.ndarray,
               source: str) -> SplitInfo:
    ids = np.asarray(manifest.sample_ids)
    text = "V:" + "\n".join(sorted(ids[validation].tolist())) + "\nT:" + "\n".join(sorted(ids[test].tolist()))
    return SplitInfo(digest=hashlib.sha256(text.encode()).hexdigest(), source=source,  # type: ignore[arg-type]
                     validation_patients=int(np.unique(subjects[validation]).size),
                     validation_samples=int(validation.size),
                     test_patients=int(np.unique(subjects[test]).size), test_samples=int(test.size))
