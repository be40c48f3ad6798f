"""``weightscope vocab``: the concept vocabularies: list and show the built-in ones, build one from a text file or
from the WordNet 3.0 nouns the package ships, embed one ahead of time for a model (cached) and export the
embeddings as .npy.

Examples::

    weightscope vocab list                                    # built-in vocabularies and their sizes
    weightscope vocab show shapes_world --limit 20
    weightscope vocab build my_words.txt --out my-vocab/      # cleaned, deduplicated: my-vocab/vocab.txt
    weightscope vocab build wordnet --limit 20000             # WordNet nouns, most senses first
    weightscope vocab embed general ViT-B-16 --pretrained openai   # cache + embeddings.npy, concepts.txt
"""
from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import WeightscopeError
from . import add_model_arguments, add_output_argument, add_quiet_argument, check_outputs

ACTIONS = ("list", "show", "build", "embed")
_WORD = re.compile(r"^[a-z][a-z' -]*[a-z]$")   # WordNet lemmas kept: letters, spaces, hyphens, apostrophes


def register(sub) -> None:
    p = sub.add_parser("vocab", help="list, show, build, embed and export concept vocabularies",
                       description=__doc__.split("\n\n")[0], epilog=__doc__.split("Examples::", 1)[1])
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help=f"one of {', '.join(ACTIONS)}")
    p.add_argument("source", nargs="?", default=None, metavar="VOCAB",
                   help="show/embed: a vocabulary spec (built-in names or files, e.g. 'shapes_world,general:5000'); "
                        "build: a text file (one concept a line) or 'wordnet'")
    add_model_arguments(p)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="show: concepts to print (default 30); build: keep the first N")
    add_output_argument(p, "vocab", help="build: where vocab.txt goes; embed: where embeddings.npy and concepts.txt go")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def wordnet_nouns() -> list[str]:
    """The WordNet 3.0 noun lemmas the package ships, as a vocabulary: underscores read as spaces; kept only when
    made of lower-case letters, spaces, hyphens and apostrophes (no digits, no abbreviations with dots), 3 to 40
    characters; then the vocabulary hygiene of every source (NFC, whitespace, CLIP-tokenizer duplicates dropped,
    see concepts.vocab). Order: most noun senses first (polysemous words are the common ones), then alphabetical."""
    from ..concepts.vocab import validate_concepts
    from ..concepts.wordnet import load_wordnet

    wn = load_wordnet()
    lemmas = [(lemma.replace("_", " "), len(wn.senses(lemma))) for lemma in wn._senses]
    kept = [(w, n) for w, n in lemmas if 3 <= len(w) <= 40 and _WORD.match(w)]
    kept.sort(key=lambda wn_: (-wn_[1], wn_[0]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return validate_concepts([w for w, _ in kept], duplicates="drop", what="WordNet nouns")


def run(args) -> int:
    from ..concepts.vocab import list_vocabularies, load_vocabulary, parse_vocabulary_spec

    if args.limit is not None and args.limit < 1:
        raise WeightscopeError(f"--limit must be at least 1, got {args.limit}")
    if args.action == "list":
        for name in list_vocabularies():
            print(f"{name:<20} {len(load_vocabulary(name)):>7,} concepts")
        return 0
    if args.source is None:
        what = "a text file or 'wordnet'" if args.action == "build" else "a vocabulary, e.g. shapes_world"
        raise WeightscopeError(f"vocab {args.action} needs {what}")
    if args.action == "show":
        concepts, description = parse_vocabulary_spec(args.source)
        n = args.limit or 30
        print(f"{description}: {len(concepts):,} concepts" + (f"; the first {n}:" if len(concepts) > n else ":"))
        print("\n".join(concepts[:n]))
        return 0
    out = Path(args.out)
    if args.action == "build":
        check_outputs(args, [out / "vocab.txt"], kind="dir")
        if args.source.lower() == "wordnet":
            concepts, description = wordnet_nouns(), "WordNet 3.0 nouns"
        else:
            if not Path(args.source).is_file():
                raise WeightscopeError(f"vocab build {args.source}: no such file; give a text file with one concept "
                                       "a line, or 'wordnet'")
            concepts, description = load_vocabulary(args.source), f"file {args.source}"
        concepts = concepts[:args.limit] if args.limit else concepts
        from ..core.fileio import write_atomic

        path = write_atomic(out / "vocab.txt", "\n".join(concepts) + "\n")
        print(f"{description}: {len(concepts):,} concepts (cleaned, duplicates dropped)")
        print(f"wrote {path}; use it with --vocab {path}")
        return 0
    # embed: through the model's own text tower, into the cache, and exported
    concepts, description = parse_vocabulary_spec(args.source)
    check_outputs(args, [out / "embeddings.npy", out / "concepts.txt"], kind="dir")
    import io

    import numpy as np

    from ..bundled import explainer_for, load_model
    from ..concepts.explainer import ConceptExplainer
    from ..core.fileio import outputs, write_atomic

    loaded = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                        trust_checkpoint=args.trust_checkpoint)
    explainer = explainer_for(loaded, ConceptExplainer(vocabulary=args.source), "inspect")
    emb = np.asarray(explainer.dictionary(loaded, progress=not args.quiet))  # what inspect reads from the cache
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    with outputs():
        written = [write_atomic(out / "embeddings.npy", buf.getvalue()),
                   write_atomic(out / "concepts.txt", "\n".join(explainer.concepts) + "\n")]
    print(f"{description}: {emb.shape[0]:,} concepts embedded by {loaded.identity} -> {emb.shape} "
          f"{emb.dtype} (normalisation {explainer.normalize}, as inspect uses them); cached for later runs")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
