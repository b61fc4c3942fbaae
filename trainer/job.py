"""One trainer run, as the Job executes it: config in, candidate model and ``report.json`` out.

:func:`run_job` reads top to bottom, one step each:

1. read the forget subjects (a mounted file or a storage object, sha256-checked) — they are
   counted, never logged;
2. :func:`load_inputs`: download the original model (strict load) and the manifest, resolve
   forget/retain/test and encode them on the device;
3. :func:`run_method`: run the method;
4. :func:`score`: evaluate the original, the candidate (and a retrained reference if given);
5. :func:`publish`: publish the candidate to ``output_uri``;
6. :func:`write_report`: build the report and write it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from forgetmi_trainer import __version__, data, storage
from forgetmi_trainer.checkpoint import fetch_model, load_model, publish_model, save_model
from forgetmi_trainer.contract import Artifact, Counts, Environment, JobConfig, ModelMetrics, Report, Timings, now
from forgetmi_trainer.contract import parse_subjects as parse_subject_text
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.evaluate import image_logits, logit_distance, model_metrics
from forgetmi_trainer.manifest import read_manifest, split
from forgetmi_trainer.methods import MethodContext, RunMethod, UnlearnInputs, UnlearnResult, get_method
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)
NOISY_TEXT_COPIES = 8


@dataclass
class Loaded:
    """The job's inputs on the device it runs on (at ``precision``): the original model, its
    tokenizer and weights' sha256, the encoded sets and their sizes."""

    original: MultimodalClassifier
    tokenizer: Any
    base_sha: str
    inputs: UnlearnInputs
    counts: Counts
    device: torch.device
    precision: str


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
    with tempfile.TemporaryDirectory(prefix="forgetmi-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        loaded = load_inputs(config, subjects, tmpdir, device, precision)
        load_seconds = time.perf_counter() - t0
        result = run_method(config, method, loaded, generator)
        scores = score(config, loaded, result, tmpdir)
        candidate_sha = publish(config, result, loaded.tokenizer, tmpdir)
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
    config: JobConfig, subjects: list[str], tmpdir: Path, device: torch.device, precision: str
) -> Loaded:
    """Download the original into ``tmpdir``, read the manifest and encode the forget, retain and
    test sets and the noisy copies of the forget reports on ``device``."""
    base_sha = fetch_model(config.model.uri, tmpdir / "original")
    original, tokenizer = load_model(tmpdir / "original", device)
    manifest = read_manifest(config.manifest_uri)
    sets = split(manifest, subjects)
    max_length = int(getattr(tokenizer, "model_max_length", 32) or 32)
    encoded = data.encode(
        data.load_images(manifest.image_uris), manifest.texts, manifest.labels, tokenizer, min(max_length, 512)
    )
    forget, retain, test = (encoded.take(ix).to(device) for ix in (sets.forget, sets.retain, sets.test))
    pool = data.noisy_text_pool(
        [manifest.texts[i] for i in sets.forget],
        config.method.noise.text_level,
        NOISY_TEXT_COPIES,
        config.seed,
        str(tokenizer.mask_token),
    )
    noisy_texts = [tuple(t.to(device) for t in data.tokenize(tokenizer, p, max_length)) for p in pool]
    counts = Counts(subjects=sets.subjects, forget_samples=len(forget), retain_samples=len(retain),
                    test_samples=len(test))
    log.info(
        "Loaded model %s and %d samples (%d to forget from %d subjects, %d retain, %d test) on %s/%s",
        config.model.version, len(manifest), counts.forget_samples, counts.subjects, counts.retain_samples,
        counts.test_samples, device, precision,
    )
    inputs = UnlearnInputs(forget, retain, test, noisy_texts)  # type: ignore[arg-type]
    return Loaded(original, tokenizer, base_sha, inputs, counts, device, precision)


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
    """Metrics of the original and the candidate, and of the retrained reference when the config names one."""
    start = time.perf_counter()
    sets, seed, precision = loaded.inputs, config.seed, loaded.precision
    original, _ = model_metrics(loaded.original, sets.forget, sets.retain, sets.test, seed=seed, precision=precision)
    unlearned, retain_logits = model_metrics(
        result.model, sets.forget, sets.retain, sets.test, seed=seed, precision=precision
    )
    retrained_metrics, distance = None, None
    if config.retrained is not None:
        fetch_model(config.retrained.uri, tmpdir / "retrained")
        retrained, _ = load_model(tmpdir / "retrained", loaded.device)
        retrained_metrics, _ = model_metrics(retrained, sets.forget, sets.retain, sets.test, seed=seed,
                                             precision=precision)
        distance = logit_distance(retain_logits, image_logits(retrained, sets.retain, precision=precision))
    return Scores(original, unlearned, retrained_metrics, distance, time.perf_counter() - start)


def publish(config: JobConfig, result: UnlearnResult, tokenizer: Any, tmpdir: Path) -> str:
    """Save the candidate with the original's tokenizer and publish it to ``output_uri``; returns its sha256."""
    save_model(result.model, tokenizer, tmpdir / "candidate")
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
