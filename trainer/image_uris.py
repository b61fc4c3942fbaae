"""Where a manifest's image is: an ``image_uri`` resolved against the manifest's own location.

An absolute ``s3://`` or ``file:///`` URI is kept as it is; anything else is a path relative to the
directory of the manifest (``images/a.png``, ``../x/b.dcm``, ``shard-000.npz#S1``), which may not
climb above the root of the manifest's bucket. A ``#key`` fragment (an ``.npz`` member) is kept.
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class ImageError(ValueError):
    """An image could not be resolved or decoded; the message is the reason only (callers name the sample_id)."""


def split_fragment(uri: str) -> tuple[str, str]:
    """``"…/shard.npz#S1"`` → ``("…/shard.npz", "S1")``; ``"…/a.png"`` → ``("…/a.png", "")``."""
    base, _, key = uri.partition("#")
    return base, key


def resolve_image_uri(image_uri: str, manifest_uri: str) -> str:
    """An absolute ``s3://`` or ``file:///`` URI as is; a relative one (``images/a.png``, ``../x/b.dcm``,
    ``shard-000.npz#S1``) against the manifest's directory, keeping a ``#key`` fragment. ``..`` may not climb
    above the bucket (``s3://``) or the filesystem root (``file://``)."""
    if image_uri.startswith(("s3://", "file:///")):
        return image_uri
    if _SCHEME.match(image_uri):
        raise ImageError("its image_uri has an unsupported scheme (use s3://, file:/// or a relative path)")
    if image_uri.startswith("/"):
        raise ImageError("its image_uri is an absolute path without a scheme (use file:///… or a relative path)")
    base, key = split_fragment(image_uri)
    if not base or base.endswith("/"):
        raise ImageError("its image_uri names a directory, not a file")
    root, directory = _root_and_directory(manifest_uri)
    segments = [s for s in directory.split("/") if s]
    for part in base.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise ImageError("its relative image_uri climbs above the root of the manifest's bucket with '..'")
            segments.pop()
        else:
            segments.append(part)
    resolved = root + "/" + "/".join(segments)
    return f"{resolved}#{key}" if key else resolved


def _root_and_directory(manifest_uri: str) -> tuple[str, str]:
    """``s3://b/d/m.csv`` → ``("s3://b", "d")``; ``file:///d/m.csv`` → ``("file://", "d")``."""
    if manifest_uri.startswith("s3://"):
        bucket, _, key = manifest_uri[len("s3://"):].partition("/")
        root, path = f"s3://{bucket}", key
    elif manifest_uri.startswith("file:///"):
        root, path = "file://", manifest_uri[len("file://"):]
    else:
        raise ImageError("a relative image_uri needs a manifest at an s3:// or file:/// URI")
    return root, path.rpartition("/")[0]
