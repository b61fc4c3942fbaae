"""A model version's reference models (offline LiRA), in the registry beside the version (not in
its directory, which holds exactly the files its metadata.json lists), through blocking storage
calls on the request's :class:`~forgetmi_trainer.storage.Objects` handle::

    <registry>/<name>/references/<version>/{meta.json, stats.npz}

``forgetmi-trainer references --model <version uri> --manifest <manifest uri> --k 4`` makes them
once per version: K models trained on random halves of the training patients. Every Job then reads
their per-sample statistics for LiRA (docs/audit.md, "Reference models").

- :func:`has_references` says whether a version has them (its ``meta.json`` exists);
- :func:`references_command` is the command that makes them, for the message that asks for it;
- :func:`retire_references` deletes a version's references folder: once a promotion forgot
  patients, the references of the version it replaced were trained on those patients, and a LiRA
  calibrated on them would keep their membership measurable.
"""

from __future__ import annotations

from forgetmi_operator.registry.paths import REFERENCES_META, references_uri, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.storage import Objects

REFERENCE_MODELS = 4
"""K in the command the operator suggests (docs/audit.md: K = 4 is what the audit measured)."""


def meta_uri(registry: str, name: str, version: str) -> str:
    return storage.join(references_uri(registry, name, version), REFERENCES_META)


def has_references(objects: Objects, registry: str, name: str, version: str) -> bool:
    """True when ``<registry>/<name>/references/<version>/meta.json`` exists."""
    return objects.exists(meta_uri(registry, name, version))


def references_command(registry: str, name: str, version: str, manifest_uri: str) -> str:
    """The command that makes the version's reference models."""
    return (f"forgetmi-trainer references --model {version_uri(registry, name, version)} --manifest {manifest_uri} "
            f"--k {REFERENCE_MODELS}")


def retire_references(objects: Objects, registry: str, name: str, version: str) -> int:
    """Delete every object under the version's references folder; how many there were (0: none).
    Raises the storage's error when one cannot be listed or deleted (the caller decides what that means)."""
    found = objects.list_uris(references_uri(registry, name, version))
    for uri in found:
        objects.delete(uri)
    return len(found)
