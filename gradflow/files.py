"""Writing a file so that no reader ever sees half of it: write a temporary file beside it, then
rename it into place (an atomic replace on POSIX and Windows). The one such helper: results
(gradflow.store), figures, dataset caches and downloads all write through it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary path next to `path`, then rename tmp to `path`. If write raises
    (or is interrupted), `path` is untouched and the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; these are ordinary files
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename in (None, tmp):  # (a message names the file being written, not its temporary name)
            e.filename = str(path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
