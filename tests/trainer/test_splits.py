"""The sets of a run: forget/retain by patient, and the non-member patients split into V and T."""

from __future__ import annotations

import numpy as np
import pytest

from forgetmi_trainer.errors import InputError
from forgetmi_trainer.manifest import Manifest, parse_manifest
from forgetmi_trainer.splits import resolve


def manifest_of(rows: list[tuple[str, int, str]], extra: str = "") -> Manifest:
    """A manifest from (subject, label, split) rows, two images per row's subject numbered in order."""
    lines = ["sample_id,subject_id,image_uri,report_text,label,split"]
    for i, (subject, label, split) in enumerate(rows):
        lines.append(f"s{i:04d},{subject},img/{i}.png,report {extra},{label},{split}")
    return parse_manifest(("\n".join(lines) + "\n").encode(), "file:///m.csv")


def hospital(test_patients: int = 40, seed: int = 0, extra: str = "") -> Manifest:
    rng = np.random.default_rng(seed)
    rows = [(f"T{p:03d}", p % 4, "train") for p in range(30) for _ in range(3)]
    for p in range(test_patients):
        label = int(rng.integers(4))
        rows += [(f"N{p:03d}", label, "test") for _ in range(int(rng.integers(1, 5)))]
    return manifest_of(rows, extra)


def test_test_patients_split_by_patient_into_validation_and_test_stratified_by_class() -> None:
    m = hospital()
    sets = resolve(m, ["T000", "T001"])
    subjects, labels = np.asarray(m.subject_ids), m.labels
    v, t = set(subjects[sets.validation]), set(subjects[sets.test])
    assert v and t and not v & t, "V and T are patient-disjoint and both non-empty"
    assert v | t == {s for s, sp in zip(m.subject_ids, m.splits, strict=True) if sp == "test"}
    assert np.all(np.asarray(m.splits)[np.r_[sets.validation, sets.test]] == "test")
    for c in range(4):  # every class's patients are dealt alternately: the halves differ by at most one
        in_v = {s for s in v if labels[subjects == s][0] == c}
        in_t = {s for s in t if labels[subjects == s][0] == c}
        assert abs(len(in_v) - len(in_t)) <= 1, (c, len(in_v), len(in_t))
    assert abs(sets.info.validation_patients - sets.info.test_patients) <= 1
    assert sets.info.source == "derived"
    assert sets.info.validation_samples == sets.validation.size and sets.info.test_samples == sets.test.size
    assert set(sets.forget.tolist()).isdisjoint(sets.retain.tolist())


def test_the_split_depends_on_the_manifest_version_only_not_on_the_forget_list() -> None:
    m = hospital()
    a, b = resolve(m, ["T000"]), resolve(m, ["T005", "T006", "T007"])
    assert np.array_equal(a.validation, b.validation) and np.array_equal(a.test, b.test)
    assert a.info.digest == b.info.digest
    again = resolve(hospital(), ["T000"])
    assert again.info.digest == a.info.digest
    # another version of the manifest (other bytes) is dealt with another generator
    digests = {resolve(hospital(extra=f"v{k}"), ["T000"]).info.digest for k in range(4)}
    assert len(digests) > 1


def test_val_rows_are_the_validation_set_when_the_manifest_has_them() -> None:
    rows = [(f"T{p}", p % 2, "train") for p in range(6)]
    rows += [("V0", 0, "val"), ("V1", 1, "val"), ("N0", 0, "test"), ("N1", 1, "test"), ("N1", 1, "test")]
    m = manifest_of(rows)
    sets = resolve(m, ["T0"])
    assert [m.subject_ids[i] for i in sets.validation] == ["V0", "V1"]
    assert [m.subject_ids[i] for i in sets.test] == ["N0", "N1", "N1"]
    assert sets.info.source == "manifest" and sets.info.test_patients == 2 and sets.info.test_samples == 3


@pytest.mark.parametrize(("rows", "message"), [
    ([("A", 0, "train"), ("B", 1, "train"), ("B", 1, "test"), ("C", 0, "test")], "both the train split"),
    ([("A", 0, "train"), ("B", 1, "train"), ("C", 0, "test")], "at least 2"),
    ([("A", 0, "train"), ("B", 1, "train"), ("C", 0, "val")], "no split=test rows"),
    ([("A", 0, "train"), ("C", 0, "test"), ("D", 1, "test")], "other than the forgotten"),
])
def test_manifests_that_cannot_be_split_are_input_errors_naming_no_patient(rows: list, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        resolve(manifest_of(rows), ["A"])
    assert "A" not in str(err.value).replace("A patient", "").replace("At least", "")


def test_unknown_forget_subjects_are_counted_not_named() -> None:
    with pytest.raises(InputError, match="1 of 2 forget subjects") as err:
        resolve(hospital(), ["T000", "ghost-patient"])
    assert "ghost" not in str(err.value)
    with pytest.raises(InputError, match="1 of 1 forget subjects") as err:  # a test patient is not forgettable
        resolve(hospital(), ["N000"])
    assert "N000" not in str(err.value)


def test_a_split_value_other_than_train_val_test_is_refused() -> None:
    with pytest.raises(InputError, match="expected train, val or test"):
        manifest_of([("A", 0, "train"), ("B", 0, "holdout")])


def test_patients_of_earlier_erasures_are_never_retained() -> None:
    """The ledger's patients leave D_r; one named again is forgotten again; one not in the manifest is ignored."""
    manifest = hospital()
    subjects = np.asarray(manifest.subject_ids)
    sets = resolve(manifest, ["T001"], ["T000", "T001", "T002", "gone-patient"])
    assert not np.isin(subjects[sets.retain], ["T000", "T001", "T002"]).any()
    assert set(subjects[sets.forget]) == {"T001"}
    assert sets.previously_forgotten == 6  # T000's and T002's three rows each; T001's rows are D_f
    assert sets.previously_forgotten_subjects == 3
    plain = resolve(manifest, ["T001"])
    assert plain.retain.size == sets.retain.size + 6 and plain.previously_forgotten == 0
    assert np.array_equal(plain.test, sets.test) and plain.info == sets.info  # V/T do not move
