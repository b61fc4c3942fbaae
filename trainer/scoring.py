"""The job's audit: every model's image-head logits on D_f, the retain sample, V and T, then its metrics.

One streamed pass over each set scores every model on each batch (:mod:`~forgetmi_trainer.inference`).
The original's logits on V and T do not depend on the forget list, so they are cached in the registry,
``<registry>/<name>/audit-cache/<version>/<key>.npz``, keyed by the version's weights, the manifest's
sha256, the split's digest, the precision and the device type: a later Job on the same version and
manifest reads them instead of running the original over V and T again (``original_cached`` in the
report). The cache is best-effort: a missing, unreadable or mismatched entry is recomputed.
V trains the membership attacker; D_f and T are what every attack compares; the retain sample gives
the attacker its members and the distance to a retrained reference. When the original's version has
reference models (:mod:`~forgetmi_trainer.references`) matching the manifest, offline LiRA scores D_f
and T as well.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetmi_trainer import distributed, storage
from forgetmi_trainer.checkpoint import fetch_model, load_model
from forgetmi_trainer.contract import JobConfig, ModelMetrics, ReferencesInfo
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.distributed import World
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.evaluate import Scored, logit_distance, model_metrics
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.lira import LiraInputs
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.streaming import Samples, subset

log = logging.getLogger(__name__)
CACHED = ("validation", "test")


@dataclass(frozen=True)
class AuditSets:
    """What the audit scores, with every row's patient code (N,) for the intervals: D_f (in memory), the
    retain sample, V and T (streamed), and the LiRA reference statistics of D_f and T when there are any."""

    forget: Encoded
    retain: Samples
    validation: Samples
    test: Samples
    groups: dict[str, np.ndarray]
    lira: LiraInputs | None
    references: ReferencesInfo


@dataclass
class Scores:
    """The metrics of the original, the candidate and the retrained reference (if any), the
    candidate's retain-logit distance to that reference, and the seconds they took."""

    original: ModelMetrics
    unlearned: ModelMetrics
    retrained: ModelMetrics | None
    distance: float | None
    seconds: float
    original_cached: bool = False


def cache_uri(config: JobConfig, model_sha: str, manifest_sha: str, split_digest: str, *, precision: str,
              device: torch.device) -> str:
    """Where the original's V and T logits of this (version, manifest, split, precision, device type) live."""
    key = hashlib.sha256(json.dumps([model_sha, manifest_sha, split_digest, precision, device.type]).encode())
    return storage.join(config.model.registry_uri, config.model.name, "audit-cache", config.model.version,
                        f"{key.hexdigest()}.npz")


def read_cache(uri: str | None, sizes: dict[str, int]) -> dict[str, np.ndarray] | None:
    """The cached logits, or None when absent, unreadable or not of the expected sizes."""
    if uri is None:
        return None
    try:
        if not storage.exists(uri):
            return None
        with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as entry:
            cached = {name: np.asarray(entry[name], dtype=np.float64) for name in CACHED}
    except (StorageError, OSError, ValueError, KeyError) as err:
        log.warning("The audit cache entry %s is unusable (%s); scoring the original again", uri, err)
        return None
    if any(cached[name].ndim != 2 or cached[name].shape[0] != sizes[name] for name in CACHED):
        return None
    return cached


def write_cache(uri: str | None, logits: dict[str, np.ndarray]) -> None:
    if uri is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **{name: logits[name] for name in CACHED})
    try:
        storage.write_bytes(uri, buffer.getvalue())
    except (StorageError, OSError) as err:
        log.warning("Could not write the audit cache entry %s (%s)", uri, err)


def sharded_logits(models: list[MultimodalClassifier], data: Encoded | Samples, world: World, *, precision: str,
                   batch_size: int) -> list[np.ndarray]:
    """:func:`~forgetmi_trainer.inference.image_logits` of every model on ``data``; in a world each rank
    scores its :func:`~forgetmi_trainer.distributed.shard` of the set and the rows are gathered."""
    if not world.distributed:
        return image_logits(models, data, precision=precision, batch_size=batch_size)
    rows = distributed.shard(len(data), world)
    part = subset(data, rows)
    if len(part):
        local = image_logits(models, part, precision=precision, batch_size=batch_size)
    else:
        local = [np.zeros((0, int(m.config.num_labels))) for m in models]
    return [distributed.gather_rows(world, rows_of_model, len(data)) for rows_of_model in local]


def score(config: JobConfig, models: list[MultimodalClassifier], sets: AuditSets, tmpdir: Path, *,
          device: torch.device, precision: str, batch_size: int, cache: str | None = None,
          world: World = distributed.SINGLE) -> Scores | None:
    """Metrics of the original and the candidate (``models``), and of the retrained reference when the
    config names one: every model on each batch, one pass over each set; the original's V and T logits
    come from the ``cache`` entry when it holds them (and go into it when it does not). In a world every
    rank scores its shard of each set; rank 0 alone computes the metrics (None on the others) and writes
    the cache, which is used only when every rank could read it."""
    start = time.perf_counter()
    models = list(models)
    if config.retrained is not None:
        fetch_model(config.retrained.uri, tmpdir / "retrained")
        retrained, _, _ = load_model(tmpdir / "retrained", device)
        models.append(retrained)
    names = ("forget", "retain", "validation", "test")
    cached = read_cache(cache, {name: len(getattr(sets, name)) for name in CACHED})
    if not distributed.all_agree(world, cached is not None):
        cached = None
    logits = {}
    for name in names:
        if cached is not None and name in cached:
            rest = sharded_logits(models[1:], getattr(sets, name), world, precision=precision, batch_size=batch_size)
            logits[name] = [cached[name], *rest]
        else:
            logits[name] = sharded_logits(models, getattr(sets, name), world, precision=precision,
                                          batch_size=batch_size)
    if not world.main:
        return None
    if cached is None:
        write_cache(cache, {name: logits[name][0] for name in CACHED})
    labels = {"forget": sets.forget.labels.cpu().numpy(), "retain": sets.retain.labels,
              "validation": sets.validation.labels, "test": sets.test.labels}
    metrics = []
    for m in range(len(models)):
        scored = {name: Scored(logits[name][m], labels[name], sets.groups[name]) for name in names}
        metrics.append(model_metrics(scored["forget"], scored["retain"], scored["test"],
                                     validation=scored["validation"], lira=sets.lira, seed=config.seed,
                                     bootstrap=config.audit.bootstrap))
    retain = logits["retain"]
    distance = logit_distance(retain[1], retain[2]) if len(models) > 2 and len(retain[1]) else None
    return Scores(metrics[0], metrics[1], metrics[2] if len(models) > 2 else None, distance,
                  time.perf_counter() - start, original_cached=cached is not None)
