"""Test helper: a model version directory as the trainer publishes one (config, weights, and a
``metadata.json`` listing their digests, with its ``parent`` and ``request`` when given)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def make_version(root: Path, model: str, version: str, parent: str | None, request: str | None = None) -> str:
    """Write ``<root>/<model>/versions/<version>``; the weights' sha256."""
    folder = root / model / "versions" / version
    folder.mkdir(parents=True)
    files = {"config.json": b"{}\n", "model.safetensors": f"weights of {version}".encode()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    meta: dict[str, object] = {"version": version, "files": digests}
    if parent is not None:
        meta["parent"] = parent
    if request is not None:
        meta["request"] = request
    (folder / "metadata.json").write_text(json.dumps(meta))
    return hashlib.sha256(files["model.safetensors"]).hexdigest()
