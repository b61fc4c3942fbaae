"""One trainer run, as the Job executes it: config in, candidate model and ``report.json`` out.

:func:`run_job` reads top to bottom, one step each:

1. read the forget subjects (a mounted file or a storage object, sha256-checked) — they are
   counted, never logged;
2. :func:`load_inputs`: download the original model (strict load) and the manifest, resolve
   forget/retain/test, read the forget set into memory on the device and open the retain and
   test sets as streams (:mod:`forgetmi_trainer.streaming`); draw the audit's retain sample;
3. :func:`run_method`: run the method;
4. :func:`score`: evaluate the original, the candidate (and a retrained reference if given) in
   one streamed pass over each of forget, test and the retain sample;
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

from forgetmi_trainer import __version__, data, storage
from forgetmi_trainer.checkpoint import fetch_model, load_model, publish_model, save_model
from forgetmi_trainer.contract import Artifact, Counts, Environment, JobConfig, ModelMetrics, Report, Timings, now
from forgetmi_trainer.contract import parse_subjects as parse_subject_text
from forgetmi_trainer.data import text_length
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.evaluate import Scored, logit_distance, model_metrics, retain_sample
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.manifest import read_manifest, split
from forgetmi_trainer.methods import MethodContext, RunMethod, UnlearnInputs, UnlearnResult, get_method
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.streaming import Samples, SampleStream, eval_batch_size

log = logging.getLogger(__name__)
NOISY_TEXT_COPIES = 8


@dataclass
class Loaded:
    """The job's inputs (at ``precision`` on ``device``): the original model, its tokenizer,
    preprocessing and weights' sha256, the sets (forget in memory, retain and test streamed), the
    audit's retain sample, every row's patient as an integer code (for the audit's intervals) and
    the counts."""

    original: MultimodalClassifier
    tokenizer: Any
    preprocessing: ImagePreprocessing
    base_sha: str
    inputs: UnlearnInputs
    audit_retain: Samples
    groups: Groups
    counts: Counts
    device: torch.device
    precision: str


@dataclass(frozen=True)
class Groups:
    """Patient codes (N,) of the forget, retain-sample and test rows, aligned with their sets."""

    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray


@dataclass
class Scores:
    """The metrics of the original, the candidate and the retrained reference (if any), the
    candidate's retain-logit distance to that reference, and the seconds they took."""

    original: ModelMetrics
    unlearned: ModelMetrics
    retrained: ModelMetrics | None
    distance: float | None
    seconds: float


def run_job(config: JobConfig, *, workdir: Path | None = None) -> Report:
    """Execute ``config``; returns the report it also wrote to ``config.resolved_report_uri``."""
    started_at, t0 = now(), time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    generator = seed_everything(config.seed)
    method = get_method(config.method.name)
    subjects = read_subjects(config)
    with tempfile.TemporaryDirectory(prefix="forgetmi-", dir=workdir) as tmp, contextlib.ExitStack() as stack:
        tmpdir = Path(tmp)
        loaded = load_inputs(config, subjects, tmpdir, device, precision, stack)
        load_seconds = time.perf_counter() - t0
        result = run_method(config, method, loaded, generator)
        scores = score(config, loaded, result, tmpdir)
        candidate_sha = publish(config, result, loaded, tmpdir)
    timings = Timings(
        load_seconds=load_seconds,
        unlearn_seconds=result.seconds,
        eval_seconds=scores.seconds,
        total_seconds=time.perf_counter() - t0,
    )
    return write_report(config, loaded, result, scores, candidate_sha, timings, started_at)


def read_subjects(config: JobConfig) -> list[str]:
    """The forget subject IDs from ``forget.file`` or ``forget.uri`` (checked against ``forget.sha256``)."""
    source = config.forget
    if source.file is not None:
        try:
            raw = Path(source.file).read_bytes()
        except OSError as err:
            raise InputError(f"The forget subjects file {source.file} could not be read ({err.strerror}).") from err
        where = source.file
    else:
        assert source.uri is not None  # guaranteed by ForgetSubjects' validator
        raw = storage.read_bytes(source.uri)
        where = source.uri
    if source.sha256 is not None and hashlib.sha256(raw).hexdigest() != source.sha256:
        raise InputError(f"The forget subjects at {where} do not match forget.sha256.")
    try:
        return parse_subject_text(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"The forget subjects at {where} are malformed: {err}.") from err


def load_inputs(
    config: JobConfig, subjects: list[str], tmpdir: Path, device: torch.device, precision: str,
    stack: contextlib.ExitStack,
) -> Loaded:
    """Download the original into ``tmpdir``, read the manifest, open the sample stream (closed
    by ``stack``), read the forget set and the noisy copies of its reports onto ``device``."""
    base_sha = fetch_model(config.model.uri, tmpdir / "original")
    original, tokenizer, preprocessing = load_model(tmpdir / "original", device)
    manifest = read_manifest(config.manifest_uri)
    sets = split(manifest, subjects)
    max_length = text_length(tokenizer)
    stream = stack.enter_context(SampleStream(
        manifest, config.manifest_uri, preprocessing, tokenizer, max_length=max_length, device=device,
        settings=config.data, cache_dir=tmpdir / "cache"))
    forget = stream.view(sets.forget).all()
    retain, test = stream.view(sets.retain), stream.view(sets.test)
    sample = retain_sample(retain.labels, config.audit.retain_samples, config.seed)
    audit_retain = retain.subset(sample)
    stream.prefetch(np.concatenate([sets.test, audit_retain.rows]))  # the audit's images, while the method runs
    pool = data.noisy_text_pool(
        [manifest.texts[i] for i in sets.forget],
        config.method.noise.text_level,
        NOISY_TEXT_COPIES,
        config.seed,
        str(tokenizer.mask_token),
    )
    noisy_texts = [tuple(t.to(device) for t in data.tokenize(tokenizer, p, max_length)) for p in pool]
    _, codes = np.unique(np.asarray(manifest.subject_ids), return_inverse=True)
    groups = Groups(codes[sets.forget], codes[audit_retain.rows], codes[sets.test])
    counts = Counts(subjects=sets.subjects, forget_samples=len(forget), retain_samples=len(retain),
                    test_samples=len(test), audit_retain_samples=len(audit_retain))
    log.info(
        "Loaded model %s and a manifest of %d samples (%d to forget from %d subjects, %d retain streamed, of which "
        "%d audited, %d test streamed) on %s/%s with %d reader worker(s)",
        config.model.version, len(manifest), counts.forget_samples, counts.subjects, counts.retain_samples,
        counts.audit_retain_samples, counts.test_samples, device, precision, stream.workers,
    )
    inputs = UnlearnInputs(forget, retain, test, noisy_texts, preprocessing)  # type: ignore[arg-type]
    return Loaded(original, tokenizer, preprocessing, base_sha, inputs, audit_retain, groups, counts, device,
                  precision)


def run_method(config: JobConfig, method: RunMethod, loaded: Loaded, generator: torch.Generator) -> UnlearnResult:
    """Run ``method`` on the loaded inputs, reporting progress once per epoch."""
    reporter = ProgressReporter(config.method.name, path=config.progress_path, uri=config.progress_uri)
    ctx = MethodContext(
        original=loaded.original,
        inputs=loaded.inputs,
        method=config.method,
        generator=generator,
        device=loaded.device,
        precision=loaded.precision,
        seed=config.seed,
        on_epoch=reporter.update,
    )
    result = method(ctx)
    log.info(
        "Ran %s for %d epoch(s) in %.1fs; selected epoch %d (%s)",
        config.method.name, result.selection.epochs_run, result.seconds, result.selection.epoch,
        result.selection.rule,
    )
    return result


def score(config: JobConfig, loaded: Loaded, result: UnlearnResult, tmpdir: Path) -> Scores:
    """Metrics of the original and the candidate, and of the retrained reference when the config
    names one: every model on each batch, one pass over forget, test and the audit's retain sample."""
    start = time.perf_counter()
    models = [loaded.original, result.model]
    if config.retrained is not None:
        fetch_model(config.retrained.uri, tmpdir / "retrained")
        retrained, _, _ = load_model(tmpdir / "retrained", loaded.device)
        models.append(retrained)
    sets, groups = loaded.inputs, loaded.groups
    options = {"precision": loaded.precision, "batch_size": eval_batch_size(config.data, loaded.preprocessing)}
    forget = image_logits(models, sets.forget, **options)  # type: ignore[arg-type]
    test = image_logits(models, sets.test, **options)  # type: ignore[arg-type]
    retain = image_logits(models, loaded.audit_retain, **options)  # type: ignore[arg-type]
    labels = (sets.forget.labels.cpu().numpy(), loaded.audit_retain.labels, sets.test.labels)
    metrics = [
        model_metrics(
            Scored(f, labels[0], groups.forget), Scored(r, labels[1], groups.retain), Scored(t, labels[2], groups.test),
            seed=config.seed, bootstrap=config.audit.bootstrap,
        )
        for f, r, t in zip(forget, retain, test, strict=True)
    ]
    retrained_metrics = metrics[2] if len(metrics) > 2 else None
    distance = logit_distance(retain[1], retain[2]) if len(retain) > 2 and len(retain[1]) else None
    return Scores(metrics[0], metrics[1], retrained_metrics, distance, time.perf_counter() - start)


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
        timings=timings,
        environment=Environment(
            device=str(loaded.device),
            precision=loaded.precision,
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            trainer_version=__version__,
        ),
        started_at=started_at,
        finished_at=now(),
    )
    storage.write_text(config.resolved_report_uri, report.to_json())
    return report
