"""``forgetmi ledger verify``: a clean ledger passes; a manual alias edit back to a pre-erasure version, an
edited entry, a promotion without its entry and an entry that was never promoted are each reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import versions
from harness.registries import point

from forgetmi_operator.local import EXIT_FAILED, EXIT_OK, cli
from forgetmi_operator.registry import aliases, ledger
from forgetmi_operator.registry.paths import alias_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.storage import DEFAULT

ALIAS, MODEL = "production", "cxr"


def make_version(root: Path, version: str, parent: str | None, request: str | None = None) -> None:
    versions.make_version(root, MODEL, version, parent, request)


def _ref(name: str) -> RequestRef:
    return RequestRef(namespace="radiology", name=name, uid=f"uid-{name}")


def _promote(registry: str, version: str, name: str, *, entry: bool = True) -> None:
    """As the operator promotes: the alias moves (by the request), then the ledger entry is appended."""
    current = aliases.resolve_alias(DEFAULT, registry, MODEL, ALIAS)
    point(registry, MODEL, ALIAS, version, expected_token=current.token, request=_ref(name))
    if entry:
        ledger.append(DEFAULT, registry, MODEL, request=_ref(name), digests=ledger.digests_of(b"k", [f"P-{name}"]),
                      base_version=current.version, candidate_version=version)


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """v1 (trained, seeded) → v2 (request a) → v3 (request b), both in the ledger."""
    make_version(tmp_path, "v1", None)
    make_version(tmp_path, "v2", "v1", "radiology/a")
    make_version(tmp_path, "v3", "v2", "radiology/b")
    uri = f"file://{tmp_path}"
    point(uri, MODEL, ALIAS, "v1")
    _promote(uri, "v2", "a")
    _promote(uri, "v3", "b")
    return uri


def _verify(registry: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = cli.main(["ledger", "verify", "--registry", registry, "--model", MODEL])
    return code, capsys.readouterr().out.strip().splitlines()


def test_a_clean_ledger_passes(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _verify(registry, capsys)
    assert code == EXIT_OK, lines
    assert lines == [f"ok ledger of model {MODEL}: 2 erasures, chain intact, every alias descends from every erasure, "
                     "alias history matches"]


def test_a_manual_alias_edit_back_to_v1_is_reported(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Someone wrote the alias file by hand: a fresh record naming v1, history gone."""
    record = aliases.resolve_alias(DEFAULT, registry, MODEL, "production").record
    edited = {"version": "v1", "sha256": aliases.verify_version(DEFAULT, registry, MODEL, "v1").sha256,
              "updatedAt": record.updated_at}
    storage.write_bytes(alias_uri(registry, MODEL, ALIAS), json.dumps(edited).encode())
    code, lines = _verify(registry, capsys)
    assert code == EXIT_FAILED
    assert any(line.startswith("FAILED descent: alias 'production' names version 'v1', which does not descend from "
                               "erasure 0 (request radiology/a, candidate 'v2')") for line in lines), lines
    assert any("manual edit" in line and "by no request" in line for line in lines), lines
    assert any("erasure 1 (request radiology/b, candidate 'v3') is not promoted" in line for line in lines), lines


def test_a_move_back_through_the_registry_helper_is_a_manual_edit_too(registry: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The alias moved with history kept, by no request (as `train --alias` or a script would)."""
    token = aliases.resolve_alias(DEFAULT, registry, MODEL, ALIAS).token
    point(registry, MODEL, ALIAS, "v1", expected_token=token)
    code, lines = _verify(registry, capsys)
    assert code == EXIT_FAILED
    assert sum("manual edit" in line for line in lines) == 1, lines  # the seed of v1 before the ledger is not


def test_an_edited_entry_is_reported(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    uri = ledger.entry_uri(registry, MODEL, 0)
    entry = json.loads(storage.read_bytes(uri))
    entry["count"], entry["digests"] = 0, []  # an erasure "forgotten"
    storage.write_bytes(uri, (json.dumps(entry) + "\n").encode())
    code, lines = _verify(registry, capsys)
    assert code == EXIT_FAILED
    assert lines == [f"FAILED chain: Ledger entry {ledger.entry_uri(registry, MODEL, 1)} does not chain to the entry "
                     "before it (previous_sha256 differs): an entry was edited or replaced; the chain is broken."]


def test_a_promotion_without_its_entry_is_reported(registry: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_version(tmp_path, "v4", "v3", "radiology/c")
    _promote(registry, "v4", "c", entry=False)  # promoted without the ledger key (or the entry was lost)
    code, lines = _verify(registry, capsys)
    assert code == EXIT_FAILED
    assert len(lines) == 1 and "by request radiology/c, which promoted its candidate but has no ledger entry" in \
        lines[0], lines
