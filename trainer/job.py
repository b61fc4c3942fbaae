"""One trainer run, as the Job executes it: config in, candidate model and ``report.json`` out.

:func:`run_job` reads top to bottom, one step each:

1. read the forget subjects (a mounted file or a storage object, sha256-checked) — they are
   counted, never logged;
2. :func:`load_inputs`: download the original model (strict load) and the manifest, resolve
   forget/retain/test, read the forget set into memory on the device and open the retain and
   validation and test sets as streams (:mod:`forgetmi_trainer.streaming`); draw the audit's retain
   sample; read the version's reference statistics (:mod:`forgetmi_trainer.references`);
3. :func:`run_method`: run the method;
4. :func:`~forgetmi_trainer.scoring.score`: evaluate the original, the candidate (and a retrained
   reference if given) in one streamed pass over each of forget, the retain sample, validation and
   test, with offline LiRA when the version has reference models;
5. :func:`publish`: publish the candidate to ``output_uri``;
6. :func:`write_report`: build the report and write it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from forgetmi_trainer import __version__, data, distributed, references, storage
from forgetmi_trainer.checkpoint import fetch_model, load_model, publish_model, save_model
from forgetmi_trainer.contract import (
    Artifact,
    Counts,
    Environment,
    ForgetSubjects,
    JobConfig,
    Report,
    SplitInfo,
    Timings,
    now,
)
from forgetmi_trainer.contract import parse_subjects as parse_subject_text
from forgetmi_trainer.data import text_length
from forgetmi_trainer.distributed import World
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.evaluate import retain_sample
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.methods import MethodContext, RunMethod, UnlearnInputs, UnlearnResult, get_method
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.scoring import AuditSets, Scores, cache_uri, score
from forgetmi_trainer.splits import resolve
from forgetmi_trainer.streaming import SampleStream, eval_batch_size

log = logging.getLogger(__name__)
NOISY_TEXT_COPIES = 8


@dataclass
class Loaded:
    """The job's inputs (at ``precision`` on ``device``): the original model, its tokenizer,
    preprocessing and weights' sha256, the method's sets (forget in memory; retain, validation and test
    streamed), what the audit scores (:class:`~forgetmi_trainer.scoring.AuditSets`), the V/T split and
    the counts."""

    original: MultimodalClassifier
    tokenizer: Any
    preprocessing: ImagePreprocessing
    base_sha: str
    inputs: UnlearnInputs
    audit: AuditSets
    splits: SplitInfo
    manifest_sha256: str
    counts: Counts
    device: torch.device
    precision: str


def run_job(config: JobConfig, *, workdir: Path | None = None, world: World | None = None) -> Report | None:
    """Execute ``config``; returns the report it also wrote to ``config.resolved_report_uri``.

    Under torchrun (``world``, else read from the environment) every rank loads the inputs, runs the
    method data-parallel and scores its shard of the audit (:mod:`~forgetmi_trainer.distributed`); rank 0
    alone writes progress, publishes the candidate and writes the report; the others return None once
    every rank is done."""
    started_at, t0 = now(), time.perf_counter()
    world = distributed.from_env() if world is None else world
    device = distributed.start(world, resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    generator = seed_everything(config.seed)
    method = get_method(config.method.name)
    subjects = read_subjects(config)
    with tempfile.TemporaryDirectory(prefix="forgetmi-", dir=workdir) as tmp, contextlib.ExitStack() as stack:
        tmpdir = Path(tmp)
        loaded = load_inputs(config, subjects, tmpdir, device, precision, stack)
        load_seconds = time.perf_counter() - t0
        result = run_method(config, method, loaded, generator, world)
        cache = cache_uri(config, loaded.base_sha, loaded.manifest_sha256, loaded.splits.digest,
                          precision=loaded.precision, device=loaded.device) if config.audit.cache else None
        scores = score(config, [loaded.original, result.model], loaded.audit, tmpdir, device=loaded.device,
                       precision=loaded.precision, batch_size=eval_batch_size(config.data, loaded.preprocessing),
                       cache=cache, world=world)
        candidate_sha = publish(config, result, loaded, tmpdir) if scores is not None else ""
    report = None
    if scores is not None:
        timings = Timings(load_seconds=load_seconds, unlearn_seconds=result.seconds, eval_seconds=scores.seconds,
                          total_seconds=time.perf_counter() - t0)
        report = write_report(config, loaded, result, scores, candidate_sha, timings, started_at, world)
    distributed.stop(world)
    return report


def read_subjects(config: JobConfig) -> list[str]:
    """The forget subject IDs from ``forget.file`` or ``forget.uri`` (checked against ``forget.sha256``)."""
    return read_subject_list(config.forget, "forget subjects", "forget")


def read_previously_forgotten(config: JobConfig) -> list[str]:
    """The manifest's patients of earlier promoted erasures (``previously_forgotten``; none without it)."""
    if config.previously_forgotten is None:
        return []
    return read_subject_list(config.previously_forgotten, "previously forgotten subjects", "previously_forgotten")


def read_subject_list(source: ForgetSubjects, what: str, field: str) -> list[str]:
    """Subject IDs from ``source.file`` or ``source.uri``, checked against ``source.sha256`` (``field`` names it)."""
    if source.file is not None:
        try:
            raw = Path(source.file).read_bytes()
        except OSError as err:
            raise InputError(f"The {what} file {source.file} could not be read ({err.strerror}).") from err
        where = source.file
    else:
        assert source.uri is not None  # guaranteed by ForgetSubjects' validator
        raw = storage.read_bytes(source.uri)
        where = source.uri
    if source.sha256 is not None and hashlib.sha256(raw).hexdigest() != source.sha256:
        raise InputError(f"The {what} at {where} do not match {field}.sha256.")
    try:
        return parse_subject_text(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"The {what} at {where} are malformed: {err}.") from err


def load_inputs(
    config: JobConfig, subjects: list[str], tmpdir: Path, device: torch.device, precision: str,
    stack: contextlib.ExitStack,
) -> Loaded:
    """Download the original into ``tmpdir``, read the manifest, open the sample stream (closed
    by ``stack``), read the forget set and the noisy copies of its reports onto ``device``."""
    base_sha = fetch_model(config.model.uri, tmpdir / "original")
    original, tokenizer, preprocessing = load_model(tmpdir / "original", device)
    manifest = read_manifest(config.manifest_uri)
    sets = resolve(manifest, subjects, read_previously_forgotten(config))
    max_length = text_length(tokenizer)
    stream = stack.enter_context(SampleStream(
        manifest, config.manifest_uri, preprocessing, tokenizer, max_length=max_length, device=device,
        settings=config.data, cache_dir=tmpdir / "cache"))
    forget = stream.view(sets.forget).all()
    retain, validation, test = stream.view(sets.retain), stream.view(sets.validation), stream.view(sets.test)
    audit_retain = retain.subset(retain_sample(retain.labels, config.audit.retain_samples, config.seed))
    # the audit's images, read while the method runs
    stream.prefetch(np.concatenate([sets.validation, sets.test, audit_retain.rows]))
    pool = data.noisy_text_pool(
        [manifest.texts[i] for i in sets.forget],
        config.method.noise.text_level,
        NOISY_TEXT_COPIES,
        config.seed,
        str(tokenizer.mask_token),
    )
    noisy_texts = [tuple(t.to(device) for t in data.tokenize(tokenizer, p, max_length)) for p in pool]
    _, codes = np.unique(np.asarray(manifest.subject_ids), return_inverse=True)
    lira, refs = references.load(config.model.uri, base_sha, manifest, sets.forget, sets.test)
    audit = AuditSets(forget, audit_retain, validation, test, lira=lira, references=refs, groups={
        "forget": codes[sets.forget], "retain": codes[audit_retain.rows], "validation": codes[sets.validation],
        "test": codes[sets.test]})
    counts = Counts(subjects=sets.subjects, forget_samples=len(forget), retain_samples=len(retain),
                    test_samples=len(test), audit_retain_samples=len(audit_retain),
                    previously_forgotten=sets.previously_forgotten,
                    previously_forgotten_subjects=sets.previously_forgotten_subjects)
    log.info(
        "Loaded model %s and a manifest of %d samples (%d to forget from %d subjects, %d of earlier erasures left "
        "out, %d retain streamed, of which %d audited, %d validation and %d test streamed; reference models %s) on "
        "%s/%s with %d reader worker(s)",
        config.model.version, len(manifest), counts.forget_samples, counts.subjects, counts.previously_forgotten,
        counts.retain_samples, counts.audit_retain_samples, len(validation), counts.test_samples, refs.status,
        device, precision, stream.workers,
    )
    inputs = UnlearnInputs(forget, retain, test, noisy_texts, preprocessing, validation=validation)
    return Loaded(original, tokenizer, preprocessing, base_sha, inputs, audit, sets.info, manifest.sha256, counts,
                  device, precision)


def run_method(config: JobConfig, method: RunMethod, loaded: Loaded, generator: torch.Generator,
               world: World = distributed.SINGLE) -> UnlearnResult:
    """Run ``method`` on the loaded inputs, rank 0 reporting progress once per epoch."""
    reporter = ProgressReporter(config.method.name, path=config.progress_path, uri=config.progress_uri)
    ctx = MethodContext(
        original=loaded.original,
        inputs=loaded.inputs,
        method=config.method,
        generator=generator,
        device=loaded.device,
        precision=loaded.precision,
        seed=config.seed,
        on_epoch=reporter.update if world.main else None,
        world=world,
    )
    result = method(ctx)
    log.info(
        "Ran %s for %d epoch(s) in %.1fs; selected epoch %d (%s)",
        config.method.name, result.selection.epochs_run, result.seconds, result.selection.epoch,
        result.selection.rule,
    )
    return result


def publish(config: JobConfig, result: UnlearnResult, loaded: Loaded, tmpdir: Path) -> str:
    """Save the candidate with the original's tokenizer and preprocessing and publish it to
    ``output_uri``; returns its sha256."""
    save_model(result.model, loaded.tokenizer, loaded.preprocessing, tmpdir / "candidate")
    metadata = {
        "version": config.candidate_version,
        "parent": config.model.version,
        "method": config.method.name,
        "request": config.request,
        "created_at": now(),
    }
    return publish_model(tmpdir / "candidate", config.output_uri, metadata)


def write_report(
    config: JobConfig,
    loaded: Loaded,
    result: UnlearnResult,
    scores: Scores,
    candidate_sha: str,
    timings: Timings,
    started_at: str,
    world: World = distributed.SINGLE,
) -> Report:
    """Build the report and write it to ``config.resolved_report_uri``."""
    report = Report(
        request=config.request,
        method=config.method.name,
        base=Artifact(uri=config.model.uri, sha256=loaded.base_sha),
        candidate=Artifact(uri=config.output_uri, sha256=candidate_sha),
        candidate_version=config.candidate_version,
        original=scores.original,
        unlearned=scores.unlearned,
        retrained=scores.retrained,
        retrained_logit_distance=scores.distance,
        selection=result.selection,
        counts=loaded.counts,
        splits=loaded.splits,
        embedding_scale=result.embedding_scale,
        references=loaded.audit.references,
        original_cached=scores.original_cached,
        timings=timings,
        environment=Environment(
            device=str(loaded.device),
            precision=loaded.precision,
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            trainer_version=__version__,
            world_size=world.size,
        ),
        started_at=started_at,
        finished_at=now(),
    )
    storage.write_text(config.resolved_report_uri, report.to_json())
    return report
