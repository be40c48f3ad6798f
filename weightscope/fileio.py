"""Atomic file writes: a reader never sees a half-written file, and existing files are kept unless asked."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def dump_json(data: dict, path: str | Path | None = None) -> str:
    """``data`` as indented JSON text; also written atomically to ``path`` when given."""
    text = json.dumps(data, indent=1)
    if path is not None:
        write_atomic(path, text)
    return text


def parse_json(text_or_path: str | Path, what: str, build: Callable[[Any], Any]):
    """``build(parsed JSON)`` from JSON text or a file path; bad input -> one-line WeightscopeError naming ``what``."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise WeightscopeError(f"{what} JSON file not found: {path}")
        text = path.read_text(encoding="utf-8")
    try:
        return build(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise WeightscopeError(f"not a weightscope {what} JSON ({type(err).__name__}: {err})") from None
