"""What the lifecycle needs from the place a request runs, as protocols: the cluster
(:mod:`forgetmi_operator.cluster`) and ``forgetmi run`` (:mod:`forgetmi_operator.local`) each
implement them, so both go through the same lifecycle code.

- :class:`SecretStore`: the request's Secrets (the referenced forget list, the request's own copy
  of it, the receipt key) — the API server's Secrets in a cluster, the ``--secrets`` file and a
  work folder locally;
- :class:`Trainers`: starting a trainer run for a request — a ``batch/v1`` Job, or a local process;
- :class:`ServingTargets`: checking and re-pointing the request's serving target;
- ``storage_for``: the storage handle of a request — its namespace's identity and reach in a cluster
  (never the operator's own), the user's own locally;
- ``receipt_key``: the key of the receipt's HMAC of the forget list, None without one;
- ``signing_key``: the receipt signing key (PEM PKCS#8 Ed25519), None without one (receipts unsigned);
- ``ledger_key``: the forget ledger's HMAC key (docs/ledger.md), None without one (no ledger written or read);
- ``present``: which of some requests (namespace, then ``(name, uid)`` pairs) still exist — for the receipt
  of a coalesced request, whose batch's other requests may have been deleted (docs/coalescing.md);
- ``gather``: joining an accepted request to a batch of coalesced requests, where there are batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_trainer.storage import Objects


async def _no_key() -> bytes | None:
    """The default of an optional key port: no key."""
    return None


async def _all_present(namespace: str, requests: Sequence[tuple[str, str]]) -> set[str]:
    """The default of ``present`` (a single local request has no batch): every request is there."""
    return {uid for _, uid in requests}


class SecretStore(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as the API server returns it (``data`` base64), None when it does not exist."""

    async def create_or_get_secret(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Secret, or return the one of that name; ``(object, created)``."""

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete the Secret (only the object with ``uid`` when given); False when it was gone."""


@dataclass(frozen=True)
class Started:
    """A trainer run of a request, started (or found started by an earlier attempt)."""

    job_name: str
    created: bool
    waiting: str
    """A sentence for the Unlearned condition while the run has not started yet."""
    event: str
    """The Event's sentence when ``created``."""


class Trainers(Protocol):
    async def start(self, body: Mapping[str, Any], spec: UnlearnRequestSpec, base_version: str,
                    kind: JobKind, rebase: int = 0) -> Started:
        """Start the ``kind`` run of the request in ``body`` from ``base_version`` (its ``rebase``-th
        rebase: docs/rebase.md), once: a second call finds the first run (``created`` False)."""


class ServingTargets(Protocol):
    async def check(self, spec: UnlearnRequestSpec, namespace: str) -> str | None:
        """Raise ``ServingTargetError`` when the target cannot be re-pointed; a sentence when it will
        not be (disabled), else None. Called before the alias moves."""

    async def point(self, spec: UnlearnRequestSpec, namespace: str, uri: str) -> None:
        """Point the target at the model ``uri`` (nothing when there is no target or it is skipped)."""


@dataclass(frozen=True)
class Ports:
    """Everything the lifecycle reaches outside its own code (see the module docstring)."""

    settings: Settings
    secrets: SecretStore
    trainers: Trainers
    targets: ServingTargets
    storage_for: Callable[[Mapping[str, Any]], Awaitable[Objects]]
    receipt_key: Callable[[], Awaitable[bytes | None]]
    signing_key: Callable[[], Awaitable[bytes | None]] = _no_key
    ledger_key: Callable[[], Awaitable[bytes | None]] = _no_key
    present: Callable[[str, Sequence[tuple[str, str]]], Awaitable[set[str]]] = _all_present
    """The uids of the given ``(name, uid)`` requests of a namespace that still exist."""
    gather: Callable[..., Awaitable[Any]] | None = None
    """Where coalescing exists (a cluster): a ``launch.Gather`` that joins an accepted request to a batch
    (docs/coalescing.md), used for the requests that may be coalesced, rebased ones included."""
