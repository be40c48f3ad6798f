"""Concept vocabularies: the texts a direction is explained with (METHODS.md section 4).

A vocabulary is a ``list[str]``, one concept per entry ("steel", "a red circle"). Sources:
- a built-in name (``list_vocabularies()``: "general" ~21.7k visual concepts, "imagenet", "cifar10",
  "cifar100", "colors", "shapes_positions", "textures_materials", "shapes_world");
- a path to a UTF-8 text file, one concept per line (blank lines are skipped);
- a Python sequence of strings.

Normalisation and validation rules (the same for every source):
- surrounding whitespace is stripped and inner runs of whitespace become one space (CLIP's
  tokenizer does the same, so the embedding is unchanged);
- non-string entries, and entries that are empty after stripping, are errors naming the entry;
- duplicates are compared case-insensitively (``casefold``), since CLIP's tokenizer lower-cases and
  two identical atoms make a dictionary's Gram matrix singular. ``duplicates="drop"`` (the default
  of :func:`load_vocabulary`) keeps the first occurrence and warns once; ``duplicates="error"``
  raises, naming both entries;
- an empty vocabulary is an error.
Concepts longer than the text tower's context are checked where the tokenizer is known, in
:func:`weightscope.embed.embed_concepts` (error by default, or open_clip's truncation on request).

Built-in files are found in the installed package (``weightscope/_vocab``, which the wheel
build copies from the repository's ``concepts/``), else in ``concepts/`` next to the package in a
source checkout. ``concepts/build_vocab.py`` regenerates them; ``concepts/README.md`` gives their
provenance and licences.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import WeightscopeError

__all__ = [
    "vocabulary_dir",
    "list_vocabularies",
    "vocabulary_path",
    "load_vocabulary",
    "validate_concepts",
    "combine_vocabularies",
    "concept_key",
]

_SHOWN = 3  # how many offending entries a message names


def vocabulary_dir() -> Path:
    """Folder holding the built-in ``<name>.txt`` files: the installed ``weightscope/_vocab`` if
    present, else the source checkout's ``concepts/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_vocab", here.parent / "concepts"):
        if candidate.is_dir() and any(candidate.glob("*.txt")):
            return candidate
    raise WeightscopeError(
        f"built-in vocabularies not found (looked in {here / '_vocab'} and {here.parent / 'concepts'}); "
        "reinstall weightscope or pass a vocabulary file path"
    )


def list_vocabularies() -> list[str]:
    """Names of the built-in vocabularies, sorted."""
    return sorted(p.stem for p in vocabulary_dir().glob("*.txt"))


def vocabulary_path(name: str) -> Path:
    """Path of the built-in vocabulary ``name`` (e.g. "general")."""
    path = vocabulary_dir() / f"{name}.txt"
    if not path.is_file():
        raise WeightscopeError(
            f"unknown built-in vocabulary {name!r}; available: {', '.join(list_vocabularies())}"
        )
    return path


def concept_key(concept: str) -> str:
    """The identity used for duplicate detection: whitespace-collapsed, case-folded."""
    return " ".join(concept.split()).casefold()


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise WeightscopeError(f"vocabulary file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise WeightscopeError(f"cannot read vocabulary file {path}: {err.strerror}") from None
    return [line for line in text.splitlines() if line.strip()]


def validate_concepts(items: Iterable, *, duplicates: str = "drop", what: str = "vocabulary") -> list[str]:
    """Check and normalise a sequence of concepts (rules in the module docstring).

    items: any iterable of str. duplicates: "drop" (keep first, warn) or "error".
    what: how messages refer to the source (e.g. a file name). Returns a new list[str].
    """
    if duplicates not in ("drop", "error"):
        raise WeightscopeError(f"duplicates={duplicates!r}; use 'drop' (keep the first occurrence) or 'error'")
    if isinstance(items, (str, bytes)):
        raise WeightscopeError(f"{what} must be a sequence of strings, not a single {type(items).__name__}")
    out: list[str] = []
    first_at: dict[str, int] = {}
    dropped: list[tuple[int, int, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):       # numpy.str_ is a str subclass and passes
            raise WeightscopeError(
                f"{what} entry {i} is {type(item).__name__} ({item!r:.40}), not a string; every concept must be text"
            )
        text = " ".join(item.split())
        if not text:
            raise WeightscopeError(f"{what} entry {i} is an empty string; remove it or give the concept's text")
        key = text.casefold()
        j = first_at.setdefault(key, i)
        if j != i:
            if duplicates == "error":
                raise WeightscopeError(
                    f"{what} entry {i} {item!r} duplicates entry {j} (compared case-insensitively); "
                    "remove duplicates, or load it with load_vocabulary(..., duplicates='drop')"
                )
            dropped.append((i, j, item))
            continue
        out.append(str(text))
    if not out:
        raise WeightscopeError(f"{what} is empty; give at least one concept")
    if dropped:
        shown = ", ".join(f"entry {i} {s!r} (= entry {j})" for i, j, s in dropped[:_SHOWN])
        more = f" and {len(dropped) - _SHOWN} more" if len(dropped) > _SHOWN else ""
        warnings.warn(
            f"{what}: dropped {len(dropped)} duplicate concept(s), keeping first occurrences: {shown}{more}",
            stacklevel=3,
        )
    return out


def load_vocabulary(source, *, duplicates: str = "drop") -> list[str]:
    """Load a vocabulary as ``list[str]``.

    source: a built-in name ("general", "imagenet", ... see :func:`list_vocabularies`), a path
    (str or os.PathLike) to a UTF-8 file with one concept per line, or a sequence of strings.
    duplicates: "drop" (default: keep the first occurrence, warn) or "error".
    Raises WeightscopeError for unknown names, missing files, empty vocabularies, non-string or
    empty entries (and duplicates when duplicates="error").
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text)
        builtin = vocabulary_dir() / f"{text}.txt"
        if isinstance(source, str) and os.sep not in text and "/" not in text and builtin.is_file():
            path = builtin
        elif not path.is_file():
            if path.exists():
                raise WeightscopeError(f"vocabulary path {text!r} is not a file")
            raise WeightscopeError(
                f"vocabulary {text!r} is neither a built-in name ({', '.join(list_vocabularies())}) "
                "nor an existing file"
            )
        return validate_concepts(_read_lines(path), duplicates=duplicates, what=f"vocabulary {path.name}")
    if isinstance(source, bytes):
        raise WeightscopeError("vocabulary given as bytes; decode it to str or pass a file path")
    if isinstance(source, np.ndarray):
        source = source.tolist()
    if not isinstance(source, (Sequence, Iterable)):
        raise WeightscopeError(
            f"vocabulary must be a built-in name, a file path or a sequence of strings, not {type(source).__name__}"
        )
    return validate_concepts(list(source), duplicates=duplicates, what="vocabulary")


def combine_vocabularies(*sources, limits: Sequence[int | None] | None = None, seed: int | None = None) -> list[str]:
    """Concatenate vocabularies, dropping concepts already taken from an earlier source.

    sources: anything :func:`load_vocabulary` accepts. limits: per source, the most NEW concepts to
    take from it (None = all); which ones: the first in the source's order when seed is None (the
    built-in "general" is ordered most frequent first, so these are the most common words), else a
    sample drawn with ``numpy.random.default_rng(seed)``, kept in source order. Deterministic.

    Example: ``combine_vocabularies("shapes_world", "general", limits=[None, 5000])`` is the shapes
    vocabulary plus the 5,000 most frequent general concepts that are not already in it.
    """
    if not sources:
        raise WeightscopeError("combine_vocabularies needs at least one vocabulary")
    if limits is None:
        limits = [None] * len(sources)
    if len(limits) != len(sources):
        raise WeightscopeError(f"limits has {len(limits)} entries for {len(sources)} vocabularies; give one per vocabulary")
    rng = np.random.default_rng(seed) if seed is not None else None
    out: list[str] = []
    seen: set[str] = set()
    for i, (src, limit) in enumerate(zip(sources, limits)):
        fresh = [c for c in load_vocabulary(src) if concept_key(c) not in seen]
        if limit is not None:
            if not isinstance(limit, (int, np.integer)) or limit < 0:
                raise WeightscopeError(f"limits[{i}] = {limit!r}; use a non-negative integer or None")
            if limit < len(fresh):
                if rng is None:
                    fresh = fresh[:limit]
                else:
                    keep = np.sort(rng.choice(len(fresh), size=int(limit), replace=False))
                    fresh = [fresh[j] for j in keep]
        out.extend(fresh)
        seen.update(concept_key(c) for c in fresh)
    if not out:
        raise WeightscopeError("the combined vocabulary is empty; raise the limits")
    return out
