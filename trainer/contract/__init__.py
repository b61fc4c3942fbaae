"""The contract between the operator and the trainer Job (torch-free).

The operator writes a :class:`JobConfig` into a ConfigMap; the trainer reads it with
``python -m forgetmi_trainer run --config job.json``, writes the candidate model and a
:class:`Report` (``report.json``), and a one-line summary to the termination-message path.
Both sides import only this package (and the storage package), so the operator image never
needs torch:

- :mod:`~forgetmi_trainer.contract.config`: the job config (operator → trainer);
- :mod:`~forgetmi_trainer.contract.report`: the report and progress (trainer → operator);
- :mod:`~forgetmi_trainer.contract.formats`: URIs, digests, the forget list, timestamps, exit
  codes and validation messages, written alike by both;
- :mod:`~forgetmi_trainer.contract.registry`: the registry's layout and its alias record (the
  operator's promotion and ``train --alias`` write it alike).
"""

from forgetmi_trainer.contract.config import (
    BOOTSTRAP_DEFAULT,
    RETAIN_SAMPLES_DEFAULT,
    RETAIN_SAMPLES_MAX,
    AuditConfig,
    DataConfig,
    ForgetSubjects,
    JobConfig,
    LossWeights,
    MethodConfig,
    MethodName,
    ModelRef,
    NoiseConfig,
    PresetName,
    SelectionRule,
    SelectionRuleName,
)
from forgetmi_trainer.contract.formats import (
    FAIL_FAST_EXIT_CODES,
    SCHEMA_VERSION,
    SHA256_PATTERN,
    SUBJECT_ID_PATTERN,
    URI_PATTERN,
    VERSION_PATTERN,
    ExitCode,
    Location,
    dotted,
    now,
    parse_subjects,
    parse_timestamp,
    subjects_text,
    timestamp,
    validation_problems,
)
from forgetmi_trainer.contract.metrics import Interval, MiaResult, ModelMetrics, SplitMetrics
from forgetmi_trainer.contract.registry import (
    ALIAS_PATTERN,
    HISTORY_LIMIT,
    AliasRecord,
    PreviousVersion,
    RequestRef,
    alias_path,
    next_record,
    references_path,
    version_path,
)
from forgetmi_trainer.contract.report import (
    COMPARISON_KEYS,
    Artifact,
    Counts,
    EmbeddingScale,
    Environment,
    Progress,
    ReferencesInfo,
    Report,
    Row,
    Selection,
    SplitInfo,
    Timings,
    comparison,
    format_comparison,
    summary_line,
)

__all__ = [
    "ALIAS_PATTERN", "BOOTSTRAP_DEFAULT", "COMPARISON_KEYS", "FAIL_FAST_EXIT_CODES", "HISTORY_LIMIT",
    "RETAIN_SAMPLES_DEFAULT", "RETAIN_SAMPLES_MAX", "SCHEMA_VERSION", "SHA256_PATTERN", "SUBJECT_ID_PATTERN",
    "URI_PATTERN", "VERSION_PATTERN", "AliasRecord", "Artifact", "AuditConfig", "Counts", "DataConfig",
    "EmbeddingScale", "Environment", "ExitCode", "ForgetSubjects", "Interval", "JobConfig", "Location",
    "LossWeights", "MethodConfig", "MethodName", "MiaResult", "ModelMetrics", "ModelRef", "NoiseConfig",
    "PresetName", "PreviousVersion", "Progress", "ReferencesInfo", "Report", "RequestRef", "Row", "Selection",
    "SelectionRule", "SelectionRuleName", "SplitInfo", "SplitMetrics", "Timings", "alias_path", "comparison",
    "dotted", "format_comparison", "next_record", "now", "parse_subjects", "parse_timestamp", "references_path",
    "subjects_text", "summary_line", "timestamp", "validation_problems", "version_path",
]
