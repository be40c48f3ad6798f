#!/usr/bin/env python
"""Regenerate the offline WordNet noun data that Similarity Depth reads (``concepts/wordnet/``).

    python concepts/build_wordnet.py            # rewrites the files in concepts/wordnet/
    python concepts/build_wordnet.py --check    # rebuilds in memory and exits 1 if a shipped file differs
    python concepts/build_wordnet.py --show NAME [NAME ...]   # print every noun sense of NAME with its gloss

Inputs (none is needed at run time by weightscope):
- Princeton WordNet 3.0 ``data.noun`` and ``index.noun`` as installed by Debian's ``wordnet-base`` package
  (``apt-get install wordnet-base`` -> /usr/share/wordnet; override with --wordnet-dir or $WORDNET_DIR),
  parsed directly (format: wndb(5)); no nltk.
- timm's ImageNet-1k synset list (``timm/data/_info/imagenet_synsets.txt``, the ILSVRC-2012 class order).
- ``CLASS_OVERRIDES`` below: hand-chosen senses for class names whose first noun sense is not the
  pictured thing, or which are not WordNet lemmas at all.

Outputs (gzip files are written with mtime 0, so rebuilding gives identical bytes):
- ``synsets.tsv.gz``: one noun synset a line, ``offset<TAB>name<TAB>hypernyms``; name follows nltk's
  convention (first lemma, lower-cased, ``.n.``, its two-digit sense number in index.noun), which nltk also
  uses to order tied lowest common hypernyms; hypernyms = comma-separated offsets of the ``@`` (hypernym)
  and ``@i`` (instance hypernym) pointers, in file order.
- ``lemmas.tsv.gz``: one noun lemma a line (lower case, underscores for spaces), ``lemma<TAB>offsets`` in
  index.noun's sense order (first = most frequent sense).
- ``imagenet_wnids.txt``: the 1,000 ImageNet-1k WordNet ids, line i = class i.
- ``overrides.tsv``: ``class name<TAB>wnid<TAB>synset name<TAB>gloss`` for every entry of CLASS_OVERRIDES.
- ``LICENSE``: WordNet 3.0's licence, copied from the header of data.noun (it must accompany derivatives).
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "wordnet"

# class name -> nltk-style sense ("lemma.n.NN", looked up through index.noun's sense order), with why.
CLASS_OVERRIDES = {
    # CIFAR-100 names that are not WordNet lemmas
    "aquarium fish": ("fish.n.01", "not a lemma; the class holds many species, so the animal fish"),
    "maple tree": ("maple.n.02", "not a lemma; maple.n.02 is the tree (maple.n.01 is its wood)"),
    # CIFAR-100 names whose first noun sense is not the pictured thing
    "beaver": ("beaver.n.07", "first sense is the fur"),
    "castle": ("castle.n.02", "first sense is a stately mansion (palace)"),
    "dolphin": ("dolphin.n.02", "first sense is the dolphinfish"),
    "flatfish": ("flatfish.n.02", "first sense is the fish as food"),
    "leopard": ("leopard.n.02", "first sense is the pelt"),
    "lobster": ("lobster.n.02", "first sense is the flesh"),
    "otter": ("otter.n.02", "first sense is the fur"),
    "plate": ("plate.n.04", "first sense is baseball's home plate"),
    "raccoon": ("raccoon.n.02", "first sense is the fur"),
    "ray": ("ray.n.07", "first sense is a beam of light"),
    "seal": ("seal.n.09", "first sense is sealing wax"),
    "shrew": ("shrew.n.02", "first sense is a scolding woman"),
    "skunk": ("skunk.n.04", "first sense is a despicable person"),
    "sweet pepper": ("sweet_pepper.n.02", "first sense is the plant; the class shows the pepper"),
    "table": ("table.n.02", "first sense is a table of data"),
    "television": ("television.n.03", "first sense is broadcasting; the class shows the receiver"),
    "tiger": ("tiger.n.02", "first sense is a fierce person"),
    "trout": ("trout.n.02", "first sense is the flesh"),
    "turtle": ("turtle.n.02", "first sense is a turtleneck sweater"),
    "whale": ("whale.n.02", "first sense is a very large person"),
    # shapes-world classes (weightscope's bundled model)
    "ring": ("ring.n.02", "first sense is a characteristic sound; the shape is the toroidal ring"),
    "diamond": ("diamond.n.03", "first sense is the gem; the shape is the rhombus"),
    "star": ("star.n.05", "first sense is the celestial body; the shape is the plane figure"),
}


class WordNetFiles:
    """data.noun + index.noun of a WordNet 3.0 installation (wndb(5) format)."""

    def __init__(self, root: Path):
        if not (root / "data.noun").is_file() or not (root / "index.noun").is_file():
            raise SystemExit(f"WordNet 3.0 noun files not found in {root}: apt-get install wordnet-base, "
                             "or pass --wordnet-dir")
        self.licence = "".join(ln[2:].split(" ", 1)[1].rstrip() + "\n" for ln in
                               (root / "data.noun").read_text(encoding="latin-1").splitlines() if ln.startswith("  "))
        self.first_lemma: dict[int, str] = {}
        self.hypernyms: dict[int, list[int]] = {}
        self.gloss: dict[int, str] = {}
        for line in (root / "data.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            offset, n_words = int(f[0]), int(f[3], 16)
            words = f[4:4 + 2 * n_words:2]
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            ptrs = [f[i + 1 + 4 * k: i + 5 + 4 * k] for k in range(n_ptr)]
            self.first_lemma[offset] = words[0].lower()
            self.hypernyms[offset] = [int(p[1]) for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
            self.gloss[offset] = gloss.strip()
        self.senses: dict[str, list[int]] = {}
        for line in (root / "index.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            f = line.split()
            lemma, n_synsets, n_ptr = f[0], int(f[2]), int(f[3])
            self.senses[lemma] = [int(x) for x in f[4 + n_ptr + 2: 4 + n_ptr + 2 + n_synsets]]

    def name(self, offset: int) -> str:
        lemma = self.first_lemma[offset]
        return f"{lemma}.n.{self.senses[lemma].index(offset) + 1:02d}"

    def lookup(self, spec: str) -> int:
        """'maple.n.02' -> offset of the 2nd noun sense of 'maple'."""
        lemma, pos, num = spec.rsplit(".", 2)
        if pos != "n" or lemma not in self.senses or not 0 < int(num) <= len(self.senses[lemma]):
            raise SystemExit(f"no noun sense {spec} in WordNet")
        return self.senses[lemma][int(num) - 1]


def _gzip(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as fh:
        fh.write(text.encode("utf-8"))
    return buf.getvalue()


def imagenet_wnids() -> list[str]:
    try:
        import timm
    except ImportError:
        raise SystemExit("timm is needed for the ImageNet-1k synset list: pip install timm") from None
    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    wnids = path.read_text().split()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise SystemExit(f"{path} is not the 1,000 sorted ILSVRC-2012 wnids")
    return wnids


def build(root: Path) -> dict[str, bytes]:
    wn = WordNetFiles(root)
    synsets = "".join(f"{o:08d}\t{wn.name(o)}\t{','.join(f'{h:08d}' for h in wn.hypernyms[o])}\n"
                      for o in sorted(wn.hypernyms))
    lemmas = "".join(f"{lemma}\t{','.join(f'{o:08d}' for o in offs)}\n" for lemma, offs in sorted(wn.senses.items()))
    wnids = imagenet_wnids()
    missing = [w for w in wnids if int(w[1:]) not in wn.hypernyms]
    if missing:
        raise SystemExit(f"ImageNet wnids not in WordNet 3.0 nouns: {missing[:5]}")
    rows = []
    for name, (spec, why) in sorted(CLASS_OVERRIDES.items()):
        off = wn.lookup(spec)
        rows.append(f"{name}\tn{off:08d}\t{wn.name(off)}\t{wn.gloss[off].split(';')[0]} ({why})\n")
    return {
        "synsets.tsv.gz": _gzip(synsets),
        "lemmas.tsv.gz": _gzip(lemmas),
        "imagenet_wnids.txt": "".join(w + "\n" for w in wnids).encode(),
        "LICENSE": ("The files in this folder derive from Princeton WordNet 3.0 (data.noun, index.noun), whose\n"
                    "licence follows.\n\n" + wn.licence).encode(),
        "overrides.tsv": ("# class name\twnid\tsynset\tgloss (why)\n" + "".join(rows)).encode(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet-dir", type=Path, default=Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet")))
    ap.add_argument("--check", action="store_true", help="exit 1 if a shipped file differs from a rebuild")
    ap.add_argument("--show", nargs="+", metavar="NAME", help="print the noun senses of these names and exit")
    args = ap.parse_args(argv)
    if args.show:
        wn = WordNetFiles(args.wordnet_dir)
        for name in args.show:
            for o in wn.senses.get(name.lower().replace(" ", "_"), []):
                print(f"{name}\tn{o:08d}\t{wn.name(o)}\t{wn.gloss[o][:100]}")
        return 0
    files = build(args.wordnet_dir)
    if args.check:
        bad = [n for n, data in files.items() if not (OUT / n).is_file() or (OUT / n).read_bytes() != data]
        print("differs: " + ", ".join(bad) if bad else "all files reproduced byte for byte")
        return 1 if bad else 0
    OUT.mkdir(exist_ok=True)
    for n, data in files.items():
        (OUT / n).write_bytes(data)
        print(f"wrote {OUT / n} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
