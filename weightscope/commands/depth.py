"""``weightscope depth``: Similarity Depth of a classifier, and whether its errors follow its class similarities.

Examples::

    weightscope depth                                              # bundled model, its 8 shape classes
    weightscope depth --classifier resnet20.th --classes cifar10 --confusion conf.npy --out sd/
    weightscope depth ViT-B-32 --pretrained openai --classes cifar100     # a CLIP zero-shot head
    weightscope depth --similarity class_similarity.npy --confusion confusion.npy --classes wnids.txt
"""
from __future__ import annotations

import argparse
import textwrap

from ..core.defaults import CLASS_LISTS as BUILTIN_CLASSES
from ..core.defaults import CLUSTERING_METHODS as METHODS
from ..core.errors import WeightscopeError
from . import add_model_arguments, add_output_argument, add_quiet_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "depth", allow_abbrev=False,
        help="Similarity Depth: the WordNet depth of the class hierarchy a classifier's head perceives",
        description=textwrap.fill(
            "Cluster the classes of a linear head by the cosine similarity of their templates (weight rows), take "
            "a maximum spanning tree per cluster and measure the WordNet depth of each edge's lowest common "
            "hypernym (Similarity Depth). With a confusion matrix, compare the trees with the same graph built "
            "from the errors (direct and extended compliance).", 100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    add_model_arguments(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--classifier", metavar="PATH",
                     help="a torch classifier's state dict; its output layer gives the class templates")
    src.add_argument("--similarity", metavar="FILE", help="a class-similarity matrix (.npy or .csv) instead of a head")
    p.add_argument("--head-key", metavar="KEY", default=None,
                   help="with --classifier: the head's weight name (default: the last 2-D weight with one row per class)")
    p.add_argument("--classes", default=None, metavar="LIST",
                   help=f"{'|'.join(BUILTIN_CLASSES)} or a file, one class a line (name, name<TAB>synset, or a "
                        "WordNet id such as n01440764); default: shapes")
    p.add_argument("--synsets", metavar="FILE", default=None,
                   help="override file: 'class name<TAB>synset' lines (WordNet id or sense such as seal.n.09)")
    p.add_argument("--confusion", metavar="FILE", default=None,
                   help="confusion matrix (.npy or .csv; row = true class); the bundled model's is computed")
    p.add_argument("--clustering", choices=METHODS, action="append", default=None,
                   help="clustering method (repeatable; default: all four, affinity first)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of Affinity Propagation and Louvain (and of the authors' noise; default 42)")
    p.add_argument("--protocol", choices=("default", "authors"), default="default",
                   help="default: results independent of the order of the classes; authors: the authors' noise, "
                        "python-louvain and class order, to reproduce their figures (pip install -e '.[depth]')")
    add_output_argument(p, "depth", help="output folder for report.html, depth.json and the CSV files")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analyses.depth import classifier_head, cosine_similarity, read_matrix, similarity_depth
    from ..bundled import read_depth_classes as read_classes, shape_classes, shapes_confusion
    from ..reports.depth import write_report
    from ..concepts.wordnet import load_wordnet, read_overrides

    model_given = args.model is not None or args.pretrained is not None or args.checkpoint is not None
    if model_given and (args.classifier or args.similarity):
        raise WeightscopeError("give one source of class templates: MODEL, --classifier or --similarity")
    if args.head_key and not args.classifier:
        raise WeightscopeError("--head-key only applies with --classifier PATH")
    bundled = not (args.classifier or args.similarity) and args.model in (None, "bundled")
    spec = args.classes or ("shapes" if bundled else None)
    if spec is None:
        raise WeightscopeError(f"give --classes ({'|'.join(BUILTIN_CLASSES)} or a file) for this classifier")
    # everything a user can get wrong is checked before a model is loaded or a cluster computed
    names, specs = read_classes(spec)
    overrides = read_overrides(args.synsets) if args.synsets else None
    wordnet = load_wordnet()
    wordnet.resolve_all(specs, overrides)
    if args.protocol == "authors" and "louvain" in (args.clustering or METHODS):
        from ..analyses.depth.core import require_python_louvain

        require_python_louvain()
    confusion = read_matrix(args.confusion, "confusion matrix") if args.confusion else None
    if confusion is not None:
        from ..analyses.depth import confusion_affinity

        confusion_affinity(confusion, len(names))
    similarity = read_matrix(args.similarity, "similarity matrix") if args.similarity else None
    if similarity is not None and similarity.shape != (len(names), len(names)):
        raise WeightscopeError(f"the similarity matrix is {similarity.shape[0]} x {similarity.shape[1]} but "
                               f"--classes lists {len(names)} classes")
    accuracy = None
    if similarity is not None:
        source = f"similarity matrix {args.similarity}"
    elif args.classifier:
        head = classifier_head(args.classifier, names, args.head_key)
        similarity, source = cosine_similarity(head), f"classifier {args.classifier}"
    else:
        from ..analyses.zeroshot import zero_shot_head
        from ..bundled import load_model

        loaded = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, tokenizer=args.tokenizer)
        shapes = bundled and spec == "shapes"
        if shapes and confusion is None:  # the shapes world makes labelled images: measure the errors too
            head, confusion, accuracy = shapes_confusion(loaded)
        elif shapes:
            head = zero_shot_head(loaded, names, shape_classes().templates)
        else:
            head = zero_shot_head(loaded, names)
        source = (f"bundled shapes-world CLIP ({loaded.name}), zero-shot shape head" if shapes
                  else f"CLIP zero-shot head of {loaded.name} ({loaded.source})")
        similarity = cosine_similarity(head)
    methods = args.clustering or list(METHODS)
    result = similarity_depth(similarity, specs, names=names, confusion=confusion, methods=methods,
                              overrides=overrides, seed=args.seed, source=source, accuracy=accuracy, wordnet=wordnet,
                              protocol=args.protocol)
    written = write_report(result, args.out, wordnet)
    print(result.summary())
    print(f"wrote {written['report.html']} (+ depth.json, summary.csv, edges.csv, clusters.csv)")
    return 0
