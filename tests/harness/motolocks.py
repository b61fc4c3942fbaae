"""moto's conditional PutObject made atomic, as S3's is.

moto 5 checks ``If-Match`` / ``If-None-Match`` and then stores the object in two steps, and its threaded
server runs concurrent PUTs in threads of their own: two promotions that read the same alias record can
both pass the check and both write, the second overwriting the first — a lost update that real S3 (which
decides a conditional write atomically) never allows. The promotion races of the fault suite hit that
window. :func:`atomic_conditional_writes` serialises moto's conditional PUTs (others run as before) in
this process, where the tests' moto server runs::

    with atomic_conditional_writes():
        ...  # the moto server of this process now decides each conditional write at once
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from moto.s3.responses import S3Response

_LOCK = threading.Lock()


def _atomic(put: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def put_object(self: Any) -> Any:
        if self.headers.get("If-Match") or self.headers.get("If-None-Match"):
            with _LOCK:
                return put(self)
        return put(self)

    return put_object


@contextlib.contextmanager
def atomic_conditional_writes() -> Iterator[None]:
    """Within the block, moto decides every conditional PutObject of this process atomically."""
    original = S3Response.put_object
    S3Response.put_object = _atomic(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response.put_object = original  # type: ignore[method-assign]
