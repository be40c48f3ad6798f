"""``weightscope similarity [MODEL_A] [MODEL_B]``: layer x layer and model x model similarity.

Examples::

    weightscope similarity                                   # data-free, bundled base vs tuned
    weightscope similarity bundled --concepts shapes --data-free --out sim/   # both, side by side
    weightscope similarity ViT-B-32:openai --concepts cifar10 --image cifar10-test/ --n-images 2000
"""
from __future__ import annotations

import argparse
import os
import textwrap

from . import add_directions_argument, add_image_argument, add_model_arguments, add_output_argument, add_quiet_argument, add_vocab_argument, explainer_from_args, parse_indices


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
                   help="data-based concepts: shapes-world masks, or CIFAR-10 classes from --image")
    add_image_argument(p, "with --concepts cifar10: the folder of class subfolders")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="images for the probes (default: 2000 shapes-world images, or every image in --image)")
    p.add_argument("--data-free", action="store_true", help="also (or only) the data-free measures")
    p.add_argument("--layers", metavar="LIST", help="layers (blocks) to compare, e.g. 0-5 or -2,-1 (default: all)")
    add_vocab_argument(p, help="vocabulary for the data-free profiles (inspect's default if omitted)")
    p.add_argument("--k", type=int, default=5, help="concepts per direction in the profiles (default 5)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3, help="COMP coherence weight (default 0.3)")
    add_directions_argument(p)
    p.set_defaults(directions=4)
    p.add_argument("--per-concept", action="store_true", help="with --out: a heatmap per concept as well")
    add_output_argument(p, "similarity", help="write report.html, similarity.json and the CSV matrices here")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def _models(args) -> list:
    """MODEL (with --pretrained/--checkpoint) and MODEL_B as LoadedModels (default: the bundled base and tuned)."""
    from ..analyses.compare import load_checkpoint
    from ..analyses.similarity import load_models
    from ..bundled import load_model, spec_loading
    from ..core.errors import WeightscopeError

    loading = spec_loading(args.trust_checkpoint)
    if args.model is None:
        if args.model_b is not None or args.pretrained or args.checkpoint:
            raise WeightscopeError("give MODEL_A before MODEL_B, --pretrained or --checkpoint")
        return load_models(["bundled", "bundled:tuned"], loading)[0]
    from .compare import split_specs

    specs, arch = split_specs([s for s in (args.model, args.model_b) if s])  # NAME:PATH names the architecture
    first = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                       trust_checkpoint=args.trust_checkpoint) \
        if (args.pretrained or args.checkpoint) else load_checkpoint(specs[0], arch, loading)
    second = [load_checkpoint(specs[1], arch, loading)] if args.model_b and arch else specs[1:]
    return load_models([first] + second, loading)[0]


def _probes(args):
    """The data-based probes --concepts names (None: none), checked before any model is loaded."""
    from ..core.errors import WeightscopeError

    if args.concepts == "cifar10" and args.image is None:
        raise WeightscopeError("--concepts cifar10 needs the test images: pass --image DIR (one subfolder per class)")
    if args.image is not None and args.concepts != "cifar10":
        raise WeightscopeError("--image is read only with --concepts cifar10")
    if args.image is not None and (len(args.image) != 1 or not os.path.isdir(args.image[0])):
        raise WeightscopeError(f"--image {' '.join(args.image)}: --concepts cifar10 reads one folder of class "
                               "subfolders")
    if args.n_images is not None and args.n_images < 20:
        raise WeightscopeError(f"n_images must be an integer of at least 20, got {args.n_images!r}")
    if args.concepts is None and not args.data_free:
        return None
    if args.concepts == "shapes":
        from ..bundled import shapes_probes

        return shapes_probes(args.n_images or 2000, seed=7)
    if args.concepts == "cifar10":
        from ..analyses.similarity import folder_probes

        return folder_probes(args.image[0], args.n_images, 0)
    return None


def run(args) -> int:
    from ..bundled import explainer_for
    from ..core.errors import WeightscopeError
    from ..reports.similarity import write_report
    from ..analyses.similarity import layer_similarity

    if args.directions < 1:
        raise WeightscopeError(f"--directions must be at least 1, got {args.directions}")
    layers = parse_indices(args.layers, "--layers")
    explainer = explainer_from_args(args)
    if args.vocab is not None:
        explainer.check()
    probes = _probes(args)
    models = _models(args)
    sim = layer_similarity(models, explainer_for(models[0], explainer, "inspect"), probes=probes,
                           data_free=True if args.data_free else None, layers=layers, n_directions=args.directions,
                           progress=not args.quiet)
    print(sim.summary_text())
    written = write_report(sim, args.out, per_concept=args.per_concept)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
