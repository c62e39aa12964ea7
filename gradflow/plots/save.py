"""Writing figures: file names from run ids, and png/pdf/svg written atomically (gradflow.files)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

from gradflow.errors import GradflowError
from gradflow.files import atomic_write
from gradflow.store import FIGURE_FORMATS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


DPI = 150
FORMATS = FIGURE_FORMATS


def file_part(text: str, limit: int = 80) -> str:
    """A piece of a file name from a run id or a folder label: no path separators, bounded length."""
    text = re.sub(r"[^\w.,=+-]+", "_", str(text)).strip("_") or "x"
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]  # stable across processes


def save(fig: Figure, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write fig as png/pdf/svg atomically (the store's temporary file, then rename), close it, return
    the path.

    fmt defaults to the path's suffix; given, it replaces the suffix."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        raise GradflowError(f"figure format {fmt!r} is not supported; choices: {', '.join(FORMATS)}")
    suffix = path.suffix.lstrip(".").lower()
    if suffix != fmt:
        path = path.with_suffix("." + fmt) if suffix in FORMATS else path.with_name(f"{path.name}.{fmt}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a folder should be, a folder we may not write into
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else f"{e.strerror} ({e.filename})"
        raise GradflowError(f"cannot write {path}: {why}; write the figure elsewhere") from None
    try:
        with warnings.catch_warnings():  # a legend of many runs can leave the axes no room: the figure is
            warnings.filterwarnings("ignore", "constrained_layout not applied")  # saved as laid out, no
            atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI))  # matplotlib line on stderr
    except OSError as e:  # a folder in the file's place, a full disk
        why = "a folder is in its place" if path.is_dir() else e.strerror or str(e)
        raise GradflowError(f"cannot write {path}: {why}; write the figure elsewhere") from None
    finally:
        if "matplotlib.pyplot" in sys.modules:  # only a pyplot-made figure is registered anywhere
            sys.modules["matplotlib.pyplot"].close(fig)
    return path
