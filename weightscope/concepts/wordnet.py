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
:meth:`WordNet.resolve_how` also says which of these chose the synset, and :meth:`WordNet.sense_note`
warns when a first sense was taken that may not be the pictured thing: it is not a physical object
(``object.n.01`` is not among its ancestors, e.g. a shape or a unit), or the lemma has several
physical-object senses (``crane``: the writer Stephen Crane, crane.n.01, comes before the machine and the
bird). Names of the shipped class lists were checked when they were built (``concepts/build_wordnet.py``)
and get no note.
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
PHYSICAL_OBJECT = 2684  # object.n.01, "a tangible and visible entity"
PERSON = 7846  # person.n.01
# the bundled shapes world's classes (weightscope.shapes.world.SHAPES; this layer cannot import it) whose first
# senses are the plane figures; ring, diamond and star have shipped overrides
_REVIEWED_SHAPES = ("circle", "oval", "crescent", "square", "triangle")


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
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise WeightscopeError(f"cannot read synset override file {path}: {err}") from None
    out = {}
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
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
        return self.resolve_how(name, overrides)[0]

    def resolve_how(self, name: str, overrides: dict[str, str] | None = None) -> tuple[int, str]:
        """(offset, how): how the synset was chosen, one of 'wordnet id', 'sense', 'override' (the
        caller's), 'shipped override', 'first sense'. Raises as :meth:`resolve`."""
        text = " ".join(str(name).split())
        key = concept_key(text)
        spec = (overrides or {}).get(key) or self.overrides.get(key) or text
        how = ("override" if key in (overrides or {}) else "shipped override" if key in self.overrides
               else "wordnet id" if _WNID.match(spec) else "sense" if _SENSE.match(spec) else "first sense")
        return self._resolve_spec(name, text, spec), how

    def _resolve_spec(self, name: str, text: str, spec: str) -> int:
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

    def is_physical_object(self, offset: int) -> bool:
        """True when object.n.01 (a tangible and visible entity) is the synset or one of its ancestors."""
        return PHYSICAL_OBJECT in self.ancestors(offset)

    def _describe(self, offset: int, spec: str | None = None) -> str:
        """'crane.n.04 (a lifting device)'; with spec (a lemma's own sense name) when the synset is named otherwise."""
        ups = self.hypernyms(offset)
        head = self.name(offset) if spec in (None, self.name(offset)) else f"{spec} = {self.name(offset)}"
        return head + (f" (a {self.name(ups[0]).rsplit('.', 2)[0].replace('_', ' ')})" if ups else "")

    def sense_note(self, name: str, offset: int, how: str) -> str | None:
        """A one-line note when a class name's first sense was taken and may not be the pictured thing (module
        docstring), naming the sense taken, the other physical-object senses and how to choose one; else None."""
        text = " ".join(str(name).split())
        if how != "first sense" or text.lower() in _reviewed_names():
            return None
        lemma = text.lower().replace(" ", "_")
        specs = {s: f"{lemma}.n.{k:02d}" for k, s in enumerate(self.senses(lemma), 1)}
        objects = [s for s in specs if self.is_physical_object(s)]
        others = [s for s in objects if s != offset]
        if self.is_physical_object(offset) and not others:
            return None
        taken = self._describe(offset, specs.get(offset))
        what = (f"{taken}, which is not a physical object" if not self.is_physical_object(offset)
                else f"{taken}, the first of {len(objects)} physical-object senses")
        also = f"; the others: {', '.join(self._describe(s, specs[s]) for s in others)}" if others else ""
        # suggest a sense that is not a person: vision classes rarely name one
        pick = next((specs[s] for s in others if PERSON not in self.ancestors(s)), specs[others[0]] if others else "n01234567")
        return (f"class {text!r} resolved to {what}{also}; to choose another, add a line such as "
                f"'{text}<TAB>{pick}' to an overrides file (--synsets FILE)")

    def resolve_all(self, names, overrides: dict[str, str] | None = None) -> list[int]:
        """Offsets of every class (in order); the first class that does not resolve raises WeightscopeError."""
        return [self.resolve(n, overrides) for n in names]


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet:
    """The shipped WordNet, read once per process (about 0.3 s)."""
    return WordNet()


@lru_cache(maxsize=1)
def _reviewed_names() -> frozenset[str]:
    """Class names of the shipped lists, whose senses were checked when the lists were built."""
    from .vocab import load_vocabulary

    return frozenset(n.lower() for n in (*load_vocabulary("cifar10"), *load_vocabulary("cifar100"), *_REVIEWED_SHAPES))


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet ids, line i = class i (ILSVRC-2012 order)."""
    return (data_dir() / "imagenet_wnids.txt").read_text().split()
