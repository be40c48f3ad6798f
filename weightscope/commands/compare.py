"""``weightscope compare BASE TUNED [TUNED ...]``: how fine-tuning changed each attention head.

Examples::

    weightscope compare bundled bundled:tuned --out cmp/          # the shipped shapes-world pair
    weightscope compare ViT-B-32:openai ft1.safetensors ft2.pt    # paths use the base's architecture
    weightscope compare base.pt tuned.pt --model ViT-B-16 --label --out cmp/
"""
from __future__ import annotations

import argparse
import textwrap

from ..compare import SPEC_HELP, compare_many
from ..reports.compare import comparison_rows, text_table, write_report


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare a base checkpoint with fine-tuned ones, head by head (reweighting vs rotation)",
        description=textwrap.fill(
            "Compare the attention heads of a base checkpoint with one or more fine-tuned checkpoints of the same "
            "architecture: match singular directions, split each head's change into reweighting (rescaled base "
            "directions) and rotation (new directions).", 100) + "\n\n" + textwrap.fill(SPEC_HELP, 100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("base", metavar="BASE", help="the base checkpoint (spec, see above)")
    p.add_argument("tuned", metavar="TUNED", nargs="+", help="one or more fine-tuned checkpoints (specs)")
    p.add_argument("--model", metavar="NAME", default=None,
                   help="open_clip architecture of checkpoint file paths (default: the base's)")
    p.add_argument("--out", metavar="DIR", default=None, help="write report.html and compare.json here")
    p.add_argument("--png", action="store_true", help="with --out: also write each figure as a PNG")
    p.add_argument("--label", action="store_true",
                   help="explain the directions of both models with concepts (runs inspect on every checkpoint)")
    p.add_argument("--vocabulary", default=None, help="concept vocabulary for --label (inspect's default if omitted)")
    p.add_argument("--n-directions", type=int, default=None, metavar="N",
                   help="with --label: explain only the N leading directions of each head")
    p.add_argument("--layers", type=int, nargs="+", default=None, metavar="L", help="compare only these layers")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle torch checkpoints in full (they hold objects other than tensors); "
                        "only for files you trust: unpickling can run code")
    p.set_defaults(func=run)


def run(args) -> int:
    comparisons = compare_many(
        args.base, args.tuned, model=args.model, label=args.label, vocabulary=args.vocabulary,
        n_directions=args.n_directions, progress=not args.quiet, layers=args.layers,
        cos_threshold=args.cos_threshold, ratio_tol=args.ratio_tol, change_tol=args.change_tol,
        tie_factor=args.tie_factor, trust_checkpoint=args.trust_checkpoint,
    )
    for c in comparisons:
        print(c.summary(n_heads=args.top))
        print()
    if len(comparisons) > 1:
        print(text_table(*comparison_rows(comparisons)))
    if args.out:
        written = write_report(comparisons, args.out, png=args.png, n_heads=max(args.top, 10))
        print(f"wrote {written['html']} and {written['json']}")
    return 0

