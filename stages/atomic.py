"""Replacing a file whole: a temp file beside it, renamed over it.

A reader (or a crash) sees the old bytes or the new ones, never half of each;
`pin` edits references this way and `init` appends its table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_beside(path: Path, data: bytes) -> None:
    """`data` into a temp file next to `path`, then renamed over it; a failure leaves `path` as it was.

    An existing file keeps its mode; a new one gets what open() would give it (0o666 less the umask).
    """
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
