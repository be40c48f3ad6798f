"""``weightscope compare BASE TUNED [TUNED ...]``: how fine-tuning changed each attention head.

Examples::

    weightscope compare                                           # the shipped shapes-world pair
    weightscope compare bundled bundled:tuned --out cmp/
    weightscope compare ViT-B-32:openai ft1.safetensors ft2.pt    # paths use the base's architecture
    weightscope compare ViT-B-16:base.pt tuned.pt --label --vocab general:5000 --out cmp/
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from ..errors import WeightscopeError
from . import (add_layer_head_arguments, add_output_argument, add_quiet_argument, add_directions_argument,
               add_vocab_argument, check_outputs, check_solver_arguments, parse_indices)

MODEL_SPECS = (
    "A model is given as: 'bundled' or 'bundled:base' / 'bundled:tuned' (the shipped shapes-world pair); "
    "NAME:TAG for open_clip pretrained weights (e.g. ViT-B-32:openai); NAME:PATH for a checkpoint file of "
    "architecture NAME (e.g. ViT-B-16:ft.pt); a bare file path (.safetensors/.pt/.pth/.bin), whose architecture "
    "is the base's; hf-hub:ORG/REPO; or a bare NAME for a randomly initialised model."
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare a base checkpoint with fine-tuned ones, head by head (reweighting vs rotation)",
        description=textwrap.fill(
            "Compare the attention heads of a base checkpoint with one or more fine-tuned checkpoints of the same "
            "architecture: match singular directions, split each head's change into reweighting (rescaled base "
            "directions) and rotation (new directions).", 100) + "\n\n" + textwrap.fill(MODEL_SPECS, 100),
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("base", metavar="BASE", nargs="?", default="bundled:base",
                   help="the base model (default: the bundled base)")
    p.add_argument("tuned", metavar="TUNED", nargs="*", default=None,
                   help="one or more fine-tuned models (default: the bundled tuned model)")
    add_layer_head_arguments(p, "compare")
    add_output_argument(p, help="write report.html and compare.json into this folder")
    p.add_argument("--png", action="store_true", help="with --out: also write each figure as a PNG")
    p.add_argument("--label", action="store_true",
                   help="explain the directions of both models with concepts (runs inspect on every checkpoint)")
    add_vocab_argument(p, help="concept vocabulary for --label (default: inspect's)")
    add_directions_argument(p)
    p.add_argument("--cos-threshold", type=float, default=0.8,
                   help="match cosine below which a direction counts as rotated (default 0.8)")
    p.add_argument("--ratio-tol", type=float, default=0.05,
                   help="|sigma ratio - 1| above which a matched direction counts as reweighted (default 0.05)")
    p.add_argument("--change-tol", type=float, default=1e-4,
                   help="relative change at or below which a head counts as unchanged (default 1e-4)")
    p.add_argument("--tie-factor", type=float, default=0.25,
                   help="neighbouring directions whose singular values differ by at most this times the head's "
                        "change (spectral norm) are compared as one subspace (default 0.25; 0: exact ties only)")
    p.add_argument("--top", type=int, default=5, metavar="N", help="most changed heads to list (default 5)")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def split_specs(specs: list[str]) -> tuple[list[str], str | None]:
    """Strip the NAME of NAME:PATH specs; returns (specs, the one architecture NAME or None)."""
    names, out = set(), []
    for spec in specs:
        name, sep, rest = str(spec).partition(":")
        if sep and name and rest and not Path(spec).exists() and (
                Path(rest).exists() or rest.lower().endswith((".safetensors", ".pt", ".pth", ".bin", ".ckpt"))):
            names.add(name)
            out.append(rest)
        else:
            out.append(spec)
    if len(names) > 1:
        raise WeightscopeError(f"the checkpoints name different architectures ({', '.join(sorted(names))}); "
                               "compare needs one")
    return out, names.pop() if names else None


def _outputs(args) -> list[Path]:
    if args.out is None:
        return []
    out = Path(args.out)
    names = ["report.html", "compare.json"]
    if args.png:
        names += ["shares.png", "layers.png"]
        names += [f"{kind}_{i}.png" for i in range(len(args.tuned)) for kind in ("heads", "directions")]
    return [out / n for n in names]


def run(args) -> int:
    if not args.tuned:
        if args.base != "bundled:base":
            raise WeightscopeError("give at least one TUNED model to compare with the base")
        args.tuned = ["bundled:tuned"]
    if args.png and args.out is None:
        raise WeightscopeError("--png needs --out DIR (where the figures go)")
    if args.directions is not None and not args.label:
        raise WeightscopeError("--directions applies to --label (how many directions to explain); add --label")
    check_solver_arguments(args)
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    if args.label and args.vocab is not None:
        from ..vocab import check_vocabulary_spec

        check_vocabulary_spec(args.vocab)
    check_outputs(args, _outputs(args), kind="dir")
    specs, model = split_specs([args.base, *args.tuned])

    from ..compare import compare_many
    from ..fileio import outputs
    from ..reports.compare import comparison_rows, text_table, write_report

    options = {k: v for k, v in (("layers", layers), ("heads", heads)) if v is not None}
    comparisons = compare_many(
        specs[0], specs[1:], model=model, label=args.label, vocabulary=args.vocab,
        n_directions=args.directions, progress=not args.quiet, cos_threshold=args.cos_threshold,
        ratio_tol=args.ratio_tol, change_tol=args.change_tol, tie_factor=args.tie_factor, **options,
    )
    for c in comparisons:
        print(c.summary(n_heads=args.top))
        print()
    if len(comparisons) > 1:
        print(text_table(*comparison_rows(comparisons)))
    if args.out:
        with outputs():  # every file of the report, or none
            written = write_report(comparisons, args.out, png=args.png, n_heads=max(args.top, 10))
        print(f"wrote {written['html']} and {written['json']}")
    return 0
