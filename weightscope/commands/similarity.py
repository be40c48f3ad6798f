"""``weightscope similarity [MODEL_A] [MODEL_B]``: layer x layer and model x model similarity.

Examples::

    weightscope similarity                                   # data-free, bundled base vs tuned
    weightscope similarity bundled --concepts shapes --data-free --out sim/   # both, side by side
    weightscope similarity ViT-B-32:openai --concepts cifar10 --images cifar10-test/ --n-images 2000
"""
from __future__ import annotations

import argparse
import textwrap

from . import add_directions_argument, add_model_arguments, add_output_argument, add_quiet_argument, add_vocab_argument, parse_indices


def register(subparsers) -> None:
    from ..core.defaults import SPEC_HELP

    p = subparsers.add_parser(
        "similarity", allow_abbrev=False,
        help="compare layers and models by their concepts (data-based probes and/or data-free weights)",
        description=textwrap.fill(
            "Layer x layer similarity within and between models. Data-based (--concepts): concept vectors "
            "(logistic probes on each layer's activations; spatial with the shapes world's masks) compared by the "
            "correlation of their responses on held-out images, with linear CKA beside it. Data-free (--data-free, the "
            "default without --concepts): concept profiles of each layer's heads and principal angles between their "
            "joint-space write subspaces.", 100) + "\n\n" + textwrap.fill(SPEC_HELP, 100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    add_model_arguments(p)
    p.add_argument("model_b", nargs="?", default=None, metavar="MODEL_B",
                   help="a second model to compare with (spec; default: none, or bundled:tuned when MODEL is omitted)")
    p.add_argument("--concepts", choices=("shapes", "cifar10"), default=None,
                   help="data-based concepts: shapes-world masks, or CIFAR-10 classes from --images")
    p.add_argument("--images", metavar="DIR", default=None, help="with --concepts cifar10: folder of class subfolders")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="images for the probes (default: 2000 shapes-world images, or every image in --images)")
    p.add_argument("--data-free", action="store_true", help="also (or only) the data-free measures")
    p.add_argument("--layers", metavar="LIST", help="layers (blocks) to compare, e.g. 0-5 or -2,-1 (default: all)")
    add_vocab_argument(p, help="vocabulary for the data-free profiles (inspect's default if omitted)")
    p.add_argument("--k", type=int, default=5, help="concepts per direction in the profiles (default 5)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3, help="COMP coherence weight (default 0.3)")
    add_directions_argument(p)
    p.set_defaults(directions=4)
    p.add_argument("--per-concept", action="store_true", help="with --out: a heatmap per concept as well")
    add_output_argument(p, help="write report.html, similarity.json and the CSV matrices here")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def _model_specs(args) -> list:
    """MODEL (with --pretrained/--checkpoint) and MODEL_B as LoadedModels or checkpoint specs."""
    from ..analyses.compare import load_checkpoint
    from ..core.errors import WeightscopeError
    from ..models.load import load_model

    if args.model is None:
        if args.model_b is not None or args.pretrained or args.checkpoint:
            raise WeightscopeError("give MODEL_A before MODEL_B, --pretrained or --checkpoint")
        return ["bundled", "bundled:tuned"]
    from .compare import split_specs

    specs, arch = split_specs([s for s in (args.model, args.model_b) if s])  # NAME:PATH names the architecture
    first = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                       trust_checkpoint=args.trust_checkpoint) \
        if (args.pretrained or args.checkpoint) else load_checkpoint(specs[0], arch, args.trust_checkpoint)
    second = [load_checkpoint(specs[1], arch, args.trust_checkpoint)] if args.model_b and arch else specs[1:]
    return [first] + second


def run(args) -> int:
    from ..core.errors import WeightscopeError
    from ..reports.similarity import write_report
    from ..analyses.similarity import layer_similarity

    if args.directions < 1:
        raise WeightscopeError(f"--directions must be at least 1, got {args.directions}")
    layers = parse_indices(args.layers, "--layers")
    sim = layer_similarity(
        _model_specs(args), concepts=args.concepts, data_free=True if args.data_free else None, images=args.images,
        n_images=args.n_images, layers=layers, vocabulary=args.vocab, k=args.k, lam=args.lam,
        n_directions=args.directions, progress=not args.quiet,
    )
    print(sim.summary_text())
    if args.out:
        written = write_report(sim, args.out, per_concept=args.per_concept)
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
