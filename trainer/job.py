"""One trainer run, as the Job executes it: config in, candidate model and ``report.json`` out.

1. read the forget subjects (a mounted file or a storage object, sha256-checked) — they are
   counted, never logged;
2. download the original model (strict load) and the manifest, resolve forget/retain/test;
3. run the method, evaluate the original, the candidate (and a retrained reference if given);
4. publish the candidate to ``output_uri`` and write the report.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers

from forgetmi_trainer import __version__, data, storage
from forgetmi_trainer.checkpoint import fetch_model, load_model, publish_model, save_model
from forgetmi_trainer.contract import Artifact, Counts, Environment, JobConfig, Report, Timings
from forgetmi_trainer.contract import parse_subjects as parse_subject_text
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.evaluate import logit_distance
from forgetmi_trainer.methods import MethodContext, get_method
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.scoring import image_logits, model_metrics
from forgetmi_trainer.unlearn import UnlearnInputs

log = logging.getLogger(__name__)
NOISY_TEXT_COPIES = 8


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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_job(config: JobConfig, *, workdir: Path | None = None) -> Report:
    """Execute ``config``; returns the report it also wrote to ``config.resolved_report_uri``."""
    started_at, t0 = _now(), time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    generator = seed_everything(config.seed)
    method = get_method(config.method.name)
    subjects = read_subjects(config)
    with tempfile.TemporaryDirectory(prefix="forgetmi-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        base_sha = fetch_model(config.model.uri, tmpdir / "original")
        original, tokenizer = load_model(tmpdir / "original", device)
        manifest = data.read_manifest(config.manifest_uri)
        sets = data.split(manifest, subjects)
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
        load_seconds = time.perf_counter() - t0
        log.info(
            "Loaded model %s and %d samples (%d to forget from %d subjects, %d retain, %d test) on %s/%s",
            config.model.version,
            len(manifest),
            len(forget),
            sets.subjects,
            len(retain),
            len(test),
            device,
            precision,
        )

        reporter = ProgressReporter(config.method.name, path=config.progress_path, uri=config.progress_uri)
        ctx = MethodContext(
            original=original,
            inputs=UnlearnInputs(forget, retain, test, noisy_texts),  # type: ignore[arg-type]
            method=config.method,
            generator=generator,
            device=device,
            precision=precision,
            seed=config.seed,
            on_epoch=reporter.update,
        )
        result = method(ctx)
        log.info(
            "Ran %s for %d epoch(s) in %.1fs; selected epoch %d (%s)",
            config.method.name,
            result.selection.epochs_run,
            result.seconds,
            result.selection.epoch,
            result.selection.rule,
        )

        t_eval = time.perf_counter()
        original_metrics, _ = model_metrics(original, forget, retain, test, seed=config.seed, precision=precision)
        unlearned_metrics, retain_logits = model_metrics(
            result.model, forget, retain, test, seed=config.seed, precision=precision
        )
        retrained_metrics, distance = None, None
        if config.retrained is not None:
            fetch_model(config.retrained.uri, tmpdir / "retrained")
            retrained, _ = load_model(tmpdir / "retrained", device)
            retrained_metrics, _ = model_metrics(retrained, forget, retain, test, seed=config.seed, precision=precision)
            distance = logit_distance(retain_logits, image_logits(retrained, retain, precision=precision))
        eval_seconds = time.perf_counter() - t_eval

        save_model(result.model, tokenizer, tmpdir / "candidate")
        candidate_sha = publish_model(
            tmpdir / "candidate",
            config.output_uri,
            {
                "version": config.candidate_version,
                "parent": config.model.version,
                "method": config.method.name,
                "request": config.request,
                "created_at": _now(),
            },
        )
    report = Report(
        request=config.request,
        method=config.method.name,
        base=Artifact(uri=config.model.uri, sha256=base_sha),
        candidate=Artifact(uri=config.output_uri, sha256=candidate_sha),
        candidate_version=config.candidate_version,
        original=original_metrics,
        unlearned=unlearned_metrics,
        retrained=retrained_metrics,
        retrained_logit_distance=distance,
        selection=result.selection,
        counts=Counts(
            subjects=sets.subjects, forget_samples=len(forget), retain_samples=len(retain), test_samples=len(test)
        ),
        timings=Timings(
            load_seconds=load_seconds,
            unlearn_seconds=result.seconds,
            eval_seconds=eval_seconds,
            total_seconds=time.perf_counter() - t0,
        ),
        environment=Environment(
            device=str(device),
            precision=precision,
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            trainer_version=__version__,
        ),
        started_at=started_at,
        finished_at=_now(),
    )
    storage.write_text(config.resolved_report_uri, report.to_json())
    return report
