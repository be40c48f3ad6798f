"""WordNet 3.0 nouns, offline: class names -> noun synsets, and the depth of two synsets' lowest common hypernym.

Reads the compact files that ``concepts/build_wordnet.py`` generates from Princeton WordNet 3.0 (shipped in
``concepts/wordnet/``, installed as ``weightscope/_vocab/wordnet/``): no nltk, no network. Synsets are
identified by their data.noun offset (int); ``wnid(offset)`` gives ImageNet's form ``n01440764``.

Depth convention (Similarity Depth, seed 003, METHODS.md section 9): the authors take the depth that NLTK's
Wu-Palmer similarity uses. Hypernyms are the ``@`` and ``@i`` (instance) pointers. The lowest common
hypernyms of a and b are the common ancestors (each synset counts as its own ancestor) whose *shortest* path
to the root is longest (NLTK's ``use_min_depth=True``); ties are ordered by synset name and the first is
taken, unless a itself is among them (so the rule is asymmetric when one synset is an ancestor of the
other; Similarity Depth passes the class with the smaller index first, as the authors' networkx edges do).
The depth reported is that hypernym's *longest* path to the root plus one, so ``entity.n.01`` has depth 1.

Class name resolution (:meth:`WordNet.resolve`): a WordNet id ``n02084071``; an nltk-style sense
``dog.n.01`` (the lemma's first, second ... noun sense in index.noun order); otherwise a class name, looked
up in the override table (the caller's, then the shipped ``overrides.tsv``), else the lemma's first noun
sense (lower case, spaces as underscores; no morphological reduction, so write singular forms).
"""
from __future__ import annotations

import gzip
import re
from functools import lru_cache
from pathlib import Path

from ..core.errors import WeightscopeError
from .vocab import concept_key, vocabulary_dir

_WNID = re.compile(r"^n(\d{8})$")
_SENSE = re.compile(r"^(.+)\.n\.(\d{1,2})$")


def data_dir() -> Path:
    """Folder of the shipped WordNet files (``wordnet/`` in the built-in vocabulary folder)."""
    path = vocabulary_dir() / "wordnet"
    if not (path / "synsets.tsv.gz").is_file():
        raise WeightscopeError(f"WordNet data not found in {path}; reinstall weightscope or run "
                               "concepts/build_wordnet.py in a source checkout")
    return path


def is_wnid(text: str) -> bool:
    """True for an ImageNet-style noun id such as 'n01440764'."""
    return bool(_WNID.match(text))


def wnid(offset: int) -> str:
    """ImageNet-style WordNet id of a noun synset offset: 2084071 -> 'n02084071'."""
    return f"n{offset:08d}"


def read_overrides(path: str | Path) -> dict[str, str]:
    """An override file: ``class name<TAB>synset`` per line (synset as 'n02084071' or 'dog.n.01'; more
    tab-separated columns and '#' comment lines are ignored). Returns {casefolded name: synset spec}."""
    from ..core.fileio import read_text

    path = Path(path)
    lines = read_text(path, "synset override file").split("\n")
    out = {}
    for i, line in enumerate(lines, 1):
        line = line.replace("\ufeff", "").strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise WeightscopeError(f"{path} line {i}: expected 'class name<TAB>synset' (e.g. 'seal\tseal.n.09')")
        out[concept_key(parts[0])] = parts[1].strip()
    return out


class WordNet:
    """The WordNet 3.0 noun hierarchy (offsets, nltk-style names, hypernym links, lemma senses)."""

    def __init__(self, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else data_dir()
        # parsed lazily: only the few synsets a run touches need their hypernym lists as ints
        self._rows: dict[int, tuple[str, str]] = {}
        for line in gzip.decompress((folder / "synsets.tsv.gz").read_bytes()).decode().splitlines():
            off, name, hyp = line.split("\t")
            self._rows[int(off)] = (name, hyp)
        self._senses: dict[str, str] = dict(
            line.split("\t", 1) for line in gzip.decompress((folder / "lemmas.tsv.gz").read_bytes()).decode().splitlines())
        self.overrides = read_overrides(folder / "overrides.tsv")
        self._max: dict[int, int] = {}
        self._min: dict[int, int] = {}

    def __contains__(self, offset: int) -> bool:
        return offset in self._rows

    def name(self, offset: int) -> str:
        """nltk-style name of a synset, e.g. 'dog.n.01'."""
        return self._rows[offset][0]

    def hypernyms(self, offset: int) -> tuple[int, ...]:
        """Offsets of the synset's hypernyms and instance hypernyms (data.noun order)."""
        hyp = self._rows[offset][1]
        return tuple(int(h) for h in hyp.split(",")) if hyp else ()

    def senses(self, lemma: str) -> tuple[int, ...]:
        """Noun synsets of a lemma ('ice_bear', lower case), most frequent sense first; () if none."""
        offs = self._senses.get(lemma)
        return tuple(int(o) for o in offs.split(",")) if offs else ()

    def max_depth(self, offset: int) -> int:
        """Longest hypernym path to the root (entity.n.01: 0)."""
        if offset not in self._max:
            ups = self.hypernyms(offset)
            self._max[offset] = 1 + max(self.max_depth(h) for h in ups) if ups else 0
        return self._max[offset]

    def min_depth(self, offset: int) -> int:
        """Shortest hypernym path to the root (entity.n.01: 0)."""
        if offset not in self._min:
            ups = self.hypernyms(offset)
            self._min[offset] = 1 + min(self.min_depth(h) for h in ups) if ups else 0
        return self._min[offset]

    def ancestors(self, offset: int) -> set[int]:
        """The synset and every (instance) hypernym above it."""
        seen, todo = {offset}, [offset]
        while todo:
            for h in self.hypernyms(todo.pop()):
                if h not in seen:
                    seen.add(h)
                    todo.append(h)
        return seen

    def lowest_common_hypernym(self, a: int, b: int) -> int:
        """The subsumer the authors' (NLTK Wu-Palmer) rule picks for synsets a and b (module docstring)."""
        common = self.ancestors(a) & self.ancestors(b)
        deepest = max(self.min_depth(s) for s in common)
        tied = sorted((s for s in common if self.min_depth(s) == deepest), key=self.name)
        return a if a in tied else tied[0]

    def lch_depth(self, a: int, b: int) -> tuple[int, int]:
        """(depth, subsumer offset): depth = longest root path of the lowest common hypernym + 1."""
        s = self.lowest_common_hypernym(a, b)
        return self.max_depth(s) + 1, s

    def resolve(self, name: str, overrides: dict[str, str] | None = None) -> int:
        """Offset of the noun synset a class name, sense or WordNet id stands for (rules in the module docstring).

        Raises WeightscopeError naming the class when nothing matches.
        """
        text = " ".join(str(name).split())
        key = concept_key(text)
        spec = (overrides or {}).get(key) or self.overrides.get(key) or text
        m = _WNID.match(spec)
        if m:
            off = int(m.group(1))
            if off not in self._rows:
                raise WeightscopeError(f"class {name!r}: {spec} is not a WordNet 3.0 noun synset id")
            return off
        m = _SENSE.match(spec)
        if m:
            offs = self.senses(m.group(1).lower().replace(" ", "_"))
            if not 0 < int(m.group(2)) <= len(offs):
                raise WeightscopeError(f"class {name!r}: WordNet has no noun sense {spec} "
                                       f"({len(offs)} noun senses of {m.group(1)!r})")
            return offs[int(m.group(2)) - 1]
        offs = self.senses(spec.lower().replace(" ", "_"))
        if not offs:
            raise WeightscopeError(
                f"class {name!r} has no WordNet noun synset and no override; give a WordNet id or sense "
                f"in an override file ('{text}<TAB>n01234567' or '{text}<TAB>lemma.n.01')")
        return offs[0]

    def resolve_all(self, names, overrides: dict[str, str] | None = None) -> list[int]:
        """Offsets of every class (in order); the first class that does not resolve raises WeightscopeError."""
        return [self.resolve(n, overrides) for n in names]


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet:
    """The shipped WordNet, read once per process (about 0.3 s)."""
    return WordNet()


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet ids, line i = class i (ILSVRC-2012 order)."""
    return (data_dir() / "imagenet_wnids.txt").read_text().split()
