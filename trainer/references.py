"""Reference models for the strong membership attack (offline LiRA, Carlini et al. 2022), once per version.

``forgetmi-trainer references --model <version uri> --manifest <uri> --k 4`` trains K reference models
with the original's recipe, encoders and data (``metadata.json`` ``training``, as ``train`` records
it; the defaults otherwise), each on a random half of the training patients: every patient is in
exactly K/2 of them, so every training sample has K/2 references that never saw it ("OUT"). Each
reference scores every row of the manifest (train, val and test) with the logit-scaled confidence of
its image head (:func:`~forgetmi_trainer.lira.confidence`). Only those statistics are stored, never
the reference models:

    <registry>/<name>/references/<version>/stats.npz   sample_ids (N,), phi (N, K) float32, member (N, K) bool
    <registry>/<name>/references/<version>/meta.json   k, manifest_sha256, model_sha256, recipe, seed, counts

beside the version's directory, not in it (a version holds exactly the files its metadata.json lists).

``meta.json`` is written last, so a references directory without it is incomplete. A Job on this version
reads them (:func:`load`) and runs offline LiRA on D_f and T with the candidate's forward passes only.
They are **stale** when the manifest's sha256 differs from the one they were made on, or the version's
weights changed; a Job then reports ``references.status: stale`` and no LiRA figure. They are
**retired** when a request that forgot patients is promoted: the operator deletes the parent version's
references (those reference models trained on the forgotten patients); the new version has none until
they are made for it, leaving out the forgotten patients (``--exclude-subjects``).
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetmi_trainer import __version__, storage
from forgetmi_trainer.checkpoint import METADATA
from forgetmi_trainer.contract import DataConfig, ReferencesInfo, now, references_path
from forgetmi_trainer.data import text_length
from forgetmi_trainer.encoders import EncoderChoice
from forgetmi_trainer.errors import ConfigError, InputError
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.lira import LiraInputs, ReferenceStats, confidence
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.runtime import resolve_device, resolve_precision
from forgetmi_trainer.streaming import SampleStream, eval_batch_size
from forgetmi_trainer.train import TrainConfig, fit, training_rows

log = logging.getLogger(__name__)
FORMAT = "forgetmi-references/v1"
STATS, META = "stats.npz", "meta.json"


def references_uri(model_uri: str) -> str:
    """``<registry>/<name>/references/<version>`` for the version ``<registry>/<name>/versions/<version>``."""
    head, sep, version = model_uri.rstrip("/").rpartition("/versions/")
    if not sep or not head or "/" in version or not version:
        raise ConfigError(f"--model must be a registry version <registry>/<name>/versions/<version>; got {model_uri}.")
    registry, _, name = head.rpartition("/")
    return storage.join(registry, references_path(name, version))


def assign(patients: int, k: int, seed: int) -> np.ndarray:
    """(P, K) bool: reference j trains on patient i; every patient in exactly K/2 references, drawn with ``seed``."""
    if k < 2 or k % 2:
        raise ConfigError(f"--k must be an even number of at least 2 (each patient in half of them); got {k}.")
    rng = np.random.default_rng([seed, 7])
    member = np.zeros((patients, k), dtype=bool)
    for i in range(patients):
        member[i, rng.permutation(k)[: k // 2]] = True
    return member


def make(model_uri: str, manifest_uri: str, *, k: int = 4, exclude: list[str] | None = None, seed: int = 0,
         device: str = "auto", precision: str = "auto", settings: DataConfig | None = None) -> dict[str, Any]:
    """Train the K references and store their statistics under ``<model_uri>/references/``; returns meta.json."""
    meta_uri = storage.join(model_uri, METADATA)
    if not storage.exists(meta_uri):
        raise InputError(f"{model_uri} is not a published model version (it has no {METADATA}).")
    metadata = storage.read_json(meta_uri)
    training = metadata.get("training") or {}
    recipe = TrainConfig.model_validate(training.get("recipe") or {})
    encoders = EncoderChoice.model_validate(training.get("encoders") or {})
    manifest, excluded = read_manifest(manifest_uri), set(exclude or [])
    train = training_rows(manifest, excluded, manifest_uri)
    subjects = np.asarray(manifest.subject_ids)
    patients, patient_of = np.unique(subjects[train], return_inverse=True)
    member_of_patient = assign(patients.size, k, seed)
    kept = np.union1d(train, np.flatnonzero(np.asarray(manifest.splits) != "train"))  # all but the excluded
    member = np.zeros((kept.size, k), dtype=bool)
    position = {int(row): i for i, row in enumerate(kept)}
    for row, p in zip(train, patient_of, strict=True):
        member[position[int(row)]] = member_of_patient[p]
    torch_device = resolve_device(device)
    prec, settings = resolve_precision(precision, torch_device), settings or DataConfig()
    phi = np.zeros((kept.size, k), dtype=np.float32)
    for j in range(k):
        rows = train[member_of_patient[patient_of, j]]
        phi[:, j] = _train_and_score(manifest, manifest_uri, rows, kept, recipe=recipe, encoders=encoders,
                                     seed=seed + 1 + j, device=torch_device, precision=prec, settings=settings)
        log.info("Reference %d of %d trained on %d samples", j + 1, k, rows.size)
    buffer = io.BytesIO()
    np.savez(buffer, sample_ids=np.asarray(manifest.sample_ids)[kept], phi=phi, member=member)
    storage.write_bytes(storage.join(references_uri(model_uri), STATS), buffer.getvalue())
    meta = {"format": FORMAT, "k": k, "manifest_uri": manifest_uri, "manifest_sha256": manifest.sha256,
            "model_sha256": metadata.get("sha256"), "recipe": recipe.model_dump(mode="json"), "seed": seed,
            "samples": int(kept.size), "training_patients": int(patients.size),
            "excluded_subjects": len(excluded), "created_at": now(), "trainer_version": __version__}
    storage.write_json(storage.join(references_uri(model_uri), META), meta)
    return meta


def _train_and_score(manifest: Manifest, manifest_uri: str, rows: np.ndarray, kept: np.ndarray, *,
                     recipe: TrainConfig, encoders: EncoderChoice, seed: int, device: torch.device, precision: str,
                     settings: DataConfig) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="forgetmi-ref-") as tmp:
        fitted = fit(manifest, manifest_uri, rows, Path(tmp), recipe=recipe, seed=seed, device=device,
                     precision=precision, encoders=encoders, settings=settings, task="reference")
        model = fitted.model.to(device)
        with SampleStream(manifest, manifest_uri, fitted.arch.preprocessing, fitted.arch.tokenizer,
                          max_length=text_length(fitted.arch.tokenizer), device=device, settings=settings,
                          cache_dir=Path(tmp) / "cache") as stream:
            [logits] = image_logits([model], stream.view(kept), precision=precision,
                                    batch_size=eval_batch_size(settings, fitted.arch.preprocessing))
    return confidence(logits, manifest.labels[kept]).astype(np.float32)


def load(model_uri: str, model_sha256: str, manifest: Manifest, forget_rows: np.ndarray,
         test_rows: np.ndarray) -> tuple[LiraInputs | None, ReferencesInfo]:
    """The version's reference statistics for D_f and T, or None and why (missing, stale)."""
    where = references_uri(model_uri)
    meta_uri = storage.join(where, META)
    if not storage.exists(meta_uri):
        return None, ReferencesInfo(status="missing", uri=where, message=(
            f"No reference models for this version: make them with `forgetmi-trainer references --model {model_uri} "
            f"--manifest <manifest uri> --k 4`."))
    meta = storage.read_json(meta_uri)
    k = int(meta.get("k", 0)) or None
    stale = _staleness(meta, model_sha256, manifest)
    if stale:
        return None, ReferencesInfo(status="stale", uri=where, k=k, message=stale)
    with np.load(io.BytesIO(storage.read_bytes(storage.join(where, STATS))), allow_pickle=False) as stats:
        ids, phi, member = stats["sample_ids"], stats["phi"].astype(np.float64), stats["member"].astype(bool)
    index = {str(s): i for i, s in enumerate(ids.tolist())}
    wanted = np.asarray(manifest.sample_ids)
    missing = sum(str(s) not in index for s in wanted[np.r_[forget_rows, test_rows]])
    if missing:
        return None, ReferencesInfo(status="stale", uri=where, k=k, message=(
            f"{missing} forget or test sample(s) have no reference statistics."))
    at = [np.asarray([index[str(s)] for s in wanted[rows]], dtype=np.int64) for rows in (forget_rows, test_rows)]
    forget, test = (ReferenceStats(phi=phi[i].reshape(i.size, -1), member=member[i].reshape(i.size, -1)) for i in at)
    return LiraInputs(forget=forget, test=test), ReferencesInfo(status="used", uri=where, k=k)


def _staleness(meta: dict[str, Any], model_sha256: str, manifest: Manifest) -> str | None:
    if meta.get("format") != FORMAT:
        return f"The references are in format {meta.get('format')!r}, not {FORMAT}."
    if meta.get("manifest_sha256") != manifest.sha256:
        return "The references were made on another version of the manifest; make them again for this one."
    if meta.get("model_sha256") not in (None, model_sha256):
        return "The references were made for other weights of this version."
    return None
