"""Concept vocabularies: the texts a direction is explained with (METHODS.md section 4).

A vocabulary is a ``list[str]``, one concept per entry ("steel", "a red circle"). Sources:
- a built-in name (``list_vocabularies()``: "general" ~21.7k visual concepts, "imagenet", "cifar10",
  "cifar100", "colors", "shapes_positions", "textures_materials", "shapes_world");
- a path to a UTF-8 text file, one concept per line (blank lines are skipped);
- a Python sequence of strings.

Normalisation and validation rules (the same for every source):
- a UTF-8 byte-order mark is dropped, text is put in Unicode NFC form (composed accents; NFC, not NFKC,
  so the stored text tokenises exactly as the given text did), surrounding whitespace is stripped and inner
  runs of whitespace become one space (CLIP's tokenizer does the same, so the embedding is unchanged);
- non-string entries, and entries that are empty after stripping, are errors naming the entry;
- entries that CLIP's tokenizer reads identically are duplicates: open_clip cleans text with ftfy (which
  folds ligatures, full-width letters and Unicode forms), unescapes HTML twice ("R&amp;B" is "R&B"),
  collapses whitespace and lower-cases, and :func:`concept_key` does the same. Two identical atoms make a
  dictionary's Gram matrix singular. ``duplicates="drop"`` (the default of :func:`load_vocabulary`) keeps
  the first occurrence and warns once with a count; ``duplicates="error"`` raises, naming both entries;
- an empty vocabulary is an error.
Concepts longer than the text tower's context are checked where the tokenizer is known, in
:func:`weightscope.concepts.embed.embed_concepts` (error by default, or open_clip's truncation on request).

Built-in files are found in the installed package (``weightscope/_vocab``, which the wheel
build copies from the repository's ``concepts/``), else in ``concepts/`` next to the package in a
source checkout. ``concepts/build_vocab.py`` regenerates them; ``concepts/README.md`` gives their
provenance and licences.
"""
from __future__ import annotations

import difflib
import html
import os
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import WeightscopeError

__all__ = [
    "vocabulary_dir",
    "list_vocabularies",
    "vocabulary_path",
    "load_vocabulary",
    "validate_concepts",
    "combine_vocabularies",
    "concept_key",
    "parse_vocabulary_spec",
    "split_vocabulary_spec",
    "check_vocabulary_spec",
    "vocabulary_files",
]

_SHOWN = 3  # how many offending entries a message names


def vocabulary_dir() -> Path:
    """Folder holding the built-in ``<name>.txt`` files: the installed ``weightscope/_vocab`` if
    present, else the source checkout's ``concepts/``."""
    here = Path(__file__).resolve().parents[1]  # the package root (explain/ sits one level below it)
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


def _unknown(name: str) -> str:
    names = list_vocabularies()
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return f"{hint}built-in: {', '.join(names)}"


def vocabulary_path(name: str) -> Path:
    """Path of the built-in vocabulary ``name`` (e.g. "general")."""
    path = vocabulary_dir() / f"{name}.txt"
    if not path.is_file():
        raise WeightscopeError(f"unknown built-in vocabulary {name!r}; {_unknown(name)}")
    return path


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def concept_key(concept: str) -> str:
    """The identity used for duplicate detection: the text as open_clip's tokenizer cleans it (ftfy, HTML
    unescaped twice, whitespace collapsed, lower-cased), so equal keys tokenise identically."""
    text = concept
    if not _printable_ascii(text) or "&" in text:  # plain ASCII without entities: ftfy leaves it as it is
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def normalize_concept(text: str) -> str:
    """Drop byte-order marks, put in Unicode NFC form, strip and collapse whitespace."""
    if not _printable_ascii(text):
        text = unicodedata.normalize("NFC", text.replace("\ufeff", ""))
    return " ".join(text.split())


def _read_lines(path: Path) -> list[str]:
    from ..core.fileio import read_lines

    return read_lines(path, "vocabulary file", comments=False)


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
        text = normalize_concept(item)
        if not text:
            raise WeightscopeError(f"{what} entry {i} is an empty string; remove it or give the concept's text")
        key = concept_key(text)
        j = first_at.setdefault(key, i)
        if j != i:
            if duplicates == "error":
                raise WeightscopeError(
                    f"{what} entry {i} {item!r} duplicates entry {j} (CLIP's tokenizer reads them identically); "
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
            f"{what}: dropped {len(dropped)} duplicate concept(s) (they tokenise identically: case, Unicode form, "
            f"HTML escapes or whitespace differ), keeping first occurrences: {shown}{more}",
            stacklevel=3,
        )
    return out


def _source_path(source: str | os.PathLike) -> Path:
    """The file a vocabulary source names: a built-in name's file, or the path itself."""
    text = os.fspath(source)
    builtin = vocabulary_dir() / f"{text}.txt"
    if isinstance(source, str) and os.sep not in text and "/" not in text and builtin.is_file():
        return builtin
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():
        raise WeightscopeError(f"vocabulary path {text!r} is not a file")
    raise WeightscopeError(f"vocabulary {text!r} is neither a built-in name nor an existing file; {_unknown(text)}")


def load_vocabulary(source, *, duplicates: str = "drop") -> list[str]:
    """Load a vocabulary as ``list[str]``.

    source: a built-in name ("general", "imagenet", ... see :func:`list_vocabularies`), a path
    (str or os.PathLike) to a UTF-8 file with one concept per line, or a sequence of strings.
    duplicates: "drop" (default: keep the first occurrence, warn) or "error".
    Raises WeightscopeError for unknown names, missing files, empty vocabularies, non-string or
    empty entries (and duplicates when duplicates="error").
    """
    if isinstance(source, (str, os.PathLike)):
        path = _source_path(source)
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


def split_vocabulary_spec(spec: str) -> list[tuple[str, int | None]]:
    """"shapes_world,general:5000" -> [("shapes_world", None), ("general", 5000)].

    Parts are comma separated, each a built-in name or a file path with an optional ":LIMIT". A file whose
    name contains commas is still one part: where joining neighbouring parts names an existing file, the
    longest such join wins.
    """
    def limit_of(text: str) -> tuple[str, int | None]:
        name, sep, limit = text.rpartition(":")
        if sep and name and limit.isdigit() and not Path(text).is_file():
            return name.strip(), int(limit)
        return text.strip(), None

    parts = str(spec).split(",")
    out: list[tuple[str, int | None]] = []
    i = 0
    while i < len(parts):
        j = len(parts)
        while j > i + 1 and not Path(limit_of(",".join(parts[i:j]).strip())[0]).is_file():
            j -= 1
        name, limit = limit_of(",".join(parts[i:j]).strip())
        if not name:
            raise WeightscopeError(f"empty vocabulary name in {spec!r}; write e.g. 'shapes_world,general:5000'")
        out.append((name, limit))
        i = j
    return out


def check_vocabulary_spec(spec: str) -> None:
    """Raise WeightscopeError (with close names) if a part of ``spec`` is neither a built-in nor a file; cheap."""
    for name, _ in split_vocabulary_spec(spec):
        _source_path(name)


def vocabulary_files(spec: str) -> list[Path]:
    """The user files (not built-ins) a spec reads; parts that name nothing are left out."""
    found = []
    for name, _ in split_vocabulary_spec(spec):
        try:
            path = _source_path(name)
        except WeightscopeError:
            continue
        if path.parent != vocabulary_dir():
            found.append(path)
    return found


def parse_vocabulary_spec(spec) -> tuple[list[str], str]:
    """Vocabulary from a spec: a list of strings, or "name[:limit],name2[:limit]..." (built-in names or files).

    Returns (concepts, description). Example: "shapes_world,general:5000" is the shapes-world vocabulary plus the
    5,000 most frequent general concepts not already in it. See :func:`split_vocabulary_spec`.
    """
    if not isinstance(spec, str):
        return combine_vocabularies(spec), "custom list"
    parts = split_vocabulary_spec(spec)
    return combine_vocabularies(*[n for n, _ in parts], limits=[lim for _, lim in parts]), spec
