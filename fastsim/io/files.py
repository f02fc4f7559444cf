"""Output files written atomically: a temporary file beside the target, renamed onto it when
complete, so that a reader never sees a partial file and an interrupted run leaves none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once at import (setting and restoring it is not thread-safe)
os.umask(_UMASK)


def temporary_beside(path) -> Path:
    """An empty temporary file in the directory of `path` (so that ``os.replace`` onto `path` is
    atomic), with the permissions of a new file (0666 minus the umask) instead of the owner-only
    0600 of `tempfile.mkstemp`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_UMASK)
    return Path(temporary)
