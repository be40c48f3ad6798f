"""Per-layer partial results of a long run, so that an interrupted run resumes where it stopped.

A run is identified by a key that hashes everything its partial results depend on (the caller passes them:
model weights, vocabulary, dictionary bytes, solver settings, ...). Each finished layer is one file
``<cache dir>/partial/<run key[:32]>/layer-<l>.json``, written atomically, holding the key and a CRC-32 of its
payload; a file whose key, checksum or JSON does not match is reported and its layer recomputed. The folder is
removed when the run completes. Nothing here knows what a layer's payload means.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..core.fileio import write_atomic

_FORMAT = 1


def array_digest(*arrays) -> str:
    """CRC-32s (hex) of the raw bytes, dtype and shape of each array (None allowed): cheap identity of inputs."""
    parts = []
    for a in arrays:
        if a is None:
            parts.append("none")
            continue
        a = np.ascontiguousarray(a)
        parts.append(f"{a.dtype}{a.shape}{zlib.crc32(memoryview(a).cast('B')):08x}")
    return ",".join(parts)


def run_key(**parts) -> str:
    """SHA-256 (hex) of the JSON of ``parts`` (sorted keys) and the partial-file format."""
    payload = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class LayerStore:
    """The partial results of one run (see the module docstring). ``enabled=False``: never read nor written,
    and a leftover folder of the same run is removed (start over)."""

    def __init__(self, cache_dir: Path, key: str, enabled: bool = True):
        self.folder = Path(cache_dir) / "partial" / key[:32]
        self.key = key
        self.enabled = enabled
        if not enabled:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, layer: int) -> Path:
        return self.folder / f"layer-{int(layer)}.json"

    def load(self, layer: int):
        """The saved payload of ``layer``, or None (absent, disabled, or damaged: then warned and dropped)."""
        if not self.enabled:
            return None
        path = self._path(layer)
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            warnings.warn(f"weightscope: cannot read partial result {path} ({err.strerror}); recomputing layer {layer}",
                          stacklevel=2)
            return None
        try:
            doc = json.loads(text)
            body = json.dumps(doc["payload"], sort_keys=True)
            if doc.get("key") != self.key or doc.get("crc32") != zlib.crc32(body.encode("utf-8")):
                raise ValueError("key or checksum mismatch")
            return doc["payload"]
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(f"weightscope: partial result {path} is damaged ({err}); recomputing layer {layer}",
                          stacklevel=2)
            return None

    def save(self, layer: int, payload) -> None:
        if not self.enabled:
            return
        body = json.dumps(payload, sort_keys=True)
        doc = {"key": self.key, "layer": int(layer), "crc32": zlib.crc32(body.encode("utf-8")), "payload": payload}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(layer), json.dumps(doc))
        except OSError as err:
            warnings.warn(f"weightscope: cannot save partial result in {self.folder} ({err}); this run will not "
                          "resume if interrupted", stacklevel=2)

    def announce(self, done: list[int], total: int) -> None:
        """Say on stderr that the run resumes, and from where."""
        if done:
            print(f"resuming: {len(done)} of {total} layers already done ({_ranges(done)}) from {self.folder}; "
                  "--no-resume starts over", file=sys.stderr)

    def finish(self) -> None:
        """The run completed: its partial results are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    out, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)
