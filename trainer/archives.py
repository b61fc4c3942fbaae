"""Open ``.npz`` archives kept per process, so a shard is opened once rather than once per member.

Opening an archive parses its whole zip directory (about 4 ms for a 512-member shard), which
would otherwise be paid for every sample read. :func:`open_npz` keeps the
:data:`OPEN_ARCHIVES` most recently used archives open, keyed by path, inode and size (a file
replaced by a rename has a new inode and is opened afresh; the modification time is left out, as
the disk cache touches it on every hit), and hands one out under a lock (a zip member read seeks
the shared handle). A forked child (a DataLoader worker) starts with none:
an inherited handle would share its file offset with the parent's.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

OPEN_ARCHIVES = 4
_ARCHIVES: OrderedDict[tuple[str, int, int], tuple[Any, Any]] = OrderedDict()
_LOCK = threading.Lock()


@contextmanager
def open_npz(path: Path) -> Iterator[Any]:
    """The open ``np.load`` archive at ``path``, held under the lock while the caller reads from it.
    FileNotFoundError propagates; a file that is not an archive raises ValueError."""
    stat = path.stat()
    ident = (str(path), stat.st_ino, stat.st_size)  # not the mtime: the disk cache touches it on every hit
    with _LOCK:
        entry = _ARCHIVES.get(ident)
        if entry is None:
            fh = open(path, "rb")  # kept open with the archive, closed when it is dropped
            try:
                archive = np.load(fh, allow_pickle=False)
                if not hasattr(archive, "files"):
                    raise ValueError("the file is not an .npz archive")
            except BaseException:
                fh.close()
                raise
            entry = _ARCHIVES[ident] = (archive, fh)
            while len(_ARCHIVES) > OPEN_ARCHIVES:
                _close(_ARCHIVES.popitem(last=False)[1])
        _ARCHIVES.move_to_end(ident)
        yield entry[0]


def _close(entry: tuple[Any, Any]) -> None:
    entry[0].close()
    entry[1].close()


def _forget_after_fork() -> None:
    """In a forked child: close the inherited handles (the child's own copies of the descriptors)."""
    global _LOCK
    _LOCK = threading.Lock()
    while _ARCHIVES:
        _close(_ARCHIVES.popitem()[1])


def _close_all() -> None:
    with _LOCK:
        while _ARCHIVES:
            _close(_ARCHIVES.popitem()[1])


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_close_all)
