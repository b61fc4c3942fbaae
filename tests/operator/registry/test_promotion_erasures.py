"""registry.promotion fails closed across requests: the alias never moves to a version that does not
descend (metadata.json ``parent``) from the candidate of every erasure in the model's forget ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import versions
from harness.registries import point

from forgetmi_operator.api.errors import PreErasureVersion
from forgetmi_operator.api.spec import ModelSpec
from forgetmi_operator.api.status import ModelVersionStatus
from forgetmi_operator.registry import aliases, ledger, promotion
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.storage import DEFAULT

MODEL = "cxr"


def make_version(root: Path, version: str, parent: str | None, request: str | None = None) -> None:
    versions.make_version(root, MODEL, version, parent, request)


def _ref(name: str) -> RequestRef:
    return RequestRef(namespace="radiology", name=name, uid=f"uid-{name}")


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """v1 (trained) → v2 (request a's candidate, promoted, in the ledger); v1-b made later from v1."""
    make_version(tmp_path, "v1", None)
    make_version(tmp_path, "v2", "v1", "radiology/a")
    make_version(tmp_path, "v1-b", "v1", "radiology/b")
    make_version(tmp_path, "v3", "v2", "radiology/c")
    uri = f"file://{tmp_path}"
    point(uri, MODEL, "production", "v1")
    point(uri, MODEL, "production", "v2", expected_token=aliases.resolve_alias(DEFAULT, uri, MODEL, "production").token,
          request=_ref("a"))
    ledger.append(DEFAULT, uri, MODEL, request=_ref("a"), digests=ledger.digests_of(b"k", ["P001"]),
                  base_version="v1", candidate_version="v2")
    return uri


def _spec(registry: str) -> ModelSpec:
    return ModelSpec.model_validate({"registryUri": registry, "name": MODEL, "alias": "production"})


def _base(registry: str, version: str) -> ModelVersionStatus:
    resolved = aliases.verify_version(DEFAULT, registry, MODEL, version)
    return ModelVersionStatus(version=version, uri=resolved.uri, sha256=resolved.sha256)


def test_lineage_follows_the_parent_chain(registry: str) -> None:
    assert aliases.lineage(DEFAULT, registry, MODEL, "v3") == ["v3", "v2", "v1"]
    assert aliases.lineage(DEFAULT, registry, MODEL, "v1") == ["v1"]


def test_a_candidate_descending_from_every_erasure_is_promoted(registry: str) -> None:
    erasures = ledger.read_ledger(DEFAULT, registry, MODEL)
    candidate = aliases.verify_version(DEFAULT, registry, MODEL, "v3")
    record = promotion.promote_candidate(DEFAULT, _spec(registry), _base(registry, "v2"), candidate, _ref("c"),
                                         erasures)
    assert record.record.version == "v3" and record.moved_on_to is None


def test_a_pre_erasure_candidate_is_refused_after_a_manual_alias_edit(registry: str) -> None:
    """Someone moved the alias back to v1 by hand; request b, accepted on v1, made v1-b: refused."""
    token = aliases.resolve_alias(DEFAULT, registry, MODEL, "production").token
    point(registry, MODEL, "production", "v1", expected_token=token)  # the manual edit (no request)
    erasures = ledger.read_ledger(DEFAULT, registry, MODEL)
    candidate = aliases.verify_version(DEFAULT, registry, MODEL, "v1-b")
    with pytest.raises(PreErasureVersion, match=r"'v1-b'.*does not descend from version 'v2'.*erasure 0.*radiology/a"):
        promotion.promote_candidate(DEFAULT, _spec(registry), _base(registry, "v1"), candidate, _ref("b"), erasures)
    assert aliases.resolve_alias(DEFAULT, registry, MODEL, "production").version == "v1"  # nothing moved


def test_check_erasures_names_the_version_and_the_erasure(registry: str) -> None:
    erasures = ledger.read_ledger(DEFAULT, registry, MODEL)
    promotion.check_erasures(DEFAULT, _spec(registry), "v3", erasures)
    with pytest.raises(PreErasureVersion, match="base version 'v1'") as err:
        promotion.check_erasures(DEFAULT, _spec(registry), "v1", erasures, "base version")
    assert err.value.reason == "PreErasureVersion"
    promotion.check_erasures(DEFAULT, _spec(registry), "v1", [])  # no ledger: nothing to descend from


def test_a_rollback_never_moves_the_alias_to_a_pre_erasure_version(registry: str) -> None:
    """Request b promoted v1-b over a hand-set v1 before the ledger knew better; its rollout fails: v1 is
    not restored, since it predates erasure 0 (the alias keeps the candidate, which is as bad, but no worse)."""
    erasures = ledger.read_ledger(DEFAULT, registry, MODEL)
    token = aliases.resolve_alias(DEFAULT, registry, MODEL, "production").token
    point(registry, MODEL, "production", "v1", expected_token=token)
    token = aliases.resolve_alias(DEFAULT, registry, MODEL, "production").token
    candidate = aliases.verify_version(DEFAULT, registry, MODEL, "v1-b")
    aliases.promote(DEFAULT, registry, MODEL, "production", version=candidate, expected_token=token,
                    request=_ref("b"))
    said = promotion.rollback_promotion(DEFAULT, _spec(registry), _base(registry, "v1"), candidate, _ref("b"),
                                        erasures)
    assert "was not moved back" in said and "does not descend" in said
