"""Atomic file writes: a reader never sees a half-written file, and existing files are kept unless asked."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import WeightscopeError


def write_atomic(path: str | Path, data: str | bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and os.replace (never half-written)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightscopeError(f"{path} already exists; choose another path or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
