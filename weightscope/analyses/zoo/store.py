"""Saved partial results of the harness, verified when read: nothing damaged or partial is ever read as done.

Every file the harness saves for later runs (``results/KEY.json``: one checkpoint's comparison; ``shards/I-of-N.json``:
one shard's summary rows; ``plan.json``: what a sharded run covers) is an envelope

    {"format": "weightscope-saved/1", "kind": ..., "key": ..., "sha256": ..., "body": {...}}

where ``sha256`` hashes the canonical JSON of ``body`` (sorted keys) and ``key`` is what the file must answer (the
content key of a result, "I-of-N" of a shard record). :func:`read_saved` raises :class:`DamagedResult` for a file
that does not parse, is of another kind or key, or whose body does not hash to ``sha256`` (truncation, a partial
copy, bit rot, a hand edit); the harness then recomputes it and says which file it replaced. Files are written
atomically (``core.fileio.write_atomic``), so a killed run leaves no half-written envelope under the final name.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...core.errors import WeightscopeError
from ...core.fileio import write_atomic

FORMAT = "weightscope-saved/1"


class DamagedResult(WeightscopeError):
    """A saved file that cannot be trusted: it does not parse, is of another kind or key, or fails its checksum."""


def _digest(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_saved(path: str | Path, kind: str, key: str, body: dict) -> Path:
    """Write ``body`` (JSON-able: floats round-trip exactly) as a verified envelope of ``kind`` answering ``key``."""
    body = json.loads(json.dumps(body, default=_plain))   # numpy scalars -> Python, so the hash is stable
    env = {"format": FORMAT, "kind": kind, "key": key, "sha256": _digest(body), "body": body}
    return write_atomic(path, json.dumps(env, indent=None))


def _plain(x):
    try:
        return x.item()
    except AttributeError:
        raise TypeError(f"not JSON-able: {type(x).__name__}") from None


def read_saved(path: str | Path, kind: str, key: str) -> dict:
    """The body of a saved envelope; raises DamagedResult (saying why) unless it parses and verifies."""
    path = Path(path)
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedResult(f"{path} does not parse ({type(err).__name__})") from None
    if not isinstance(env, dict) or env.get("format") != FORMAT:
        raise DamagedResult(f"{path} is not a weightscope saved result (format {env.get('format') if isinstance(env, dict) else None!r})")
    if env.get("kind") != kind or env.get("key") != key:
        raise DamagedResult(f"{path} holds {env.get('kind')} {env.get('key')!r}, not {kind} {key!r}")
    if not isinstance(env.get("body"), dict) or _digest(env["body"]) != env.get("sha256"):
        raise DamagedResult(f"{path} fails its checksum (changed or partly written)")
    return env["body"]
