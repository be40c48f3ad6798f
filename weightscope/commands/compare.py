"""``weightscope compare [BASE] [TUNED ...] [--manifest FILE]``: how fine-tuning changed each attention head.

Examples::

    weightscope compare                                           # the shipped shapes-world pair
    weightscope compare bundled bundled:tuned --out cmp/
    weightscope compare ViT-B-32:openai ft1.safetensors ft2.pt --out cmp/      # paths: the base's architecture
    weightscope compare ViT-B-16:openai --manifest runs.csv --out cmp/ --scheduler tcp://head:8786
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from ..compare import DEFAULTS, SPEC_HELP
from ..harness import read_manifest, run_harness
from . import parse_indices


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare a base checkpoint with fine-tuned ones, head by head (in-basis vs off-basis change)",
        description=textwrap.fill(
            "Compare the attention heads of a base checkpoint with fine-tuned checkpoints of the same architecture: "
            "split each head's change energy into in-basis (rescaling the base's own singular directions) and "
            "off-basis (turning, new directions), count reweighted and rotated directions and intruder dimensions. "
            "Many checkpoints run as one task each on Dask distributed when installed (a local cluster, or "
            "--scheduler); results under --out are reused by a rerun.", 100) + "\n\n" + textwrap.fill(SPEC_HELP, 100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
        allow_abbrev=False,
    )
    p.add_argument("base", metavar="BASE", nargs="?", default="bundled",
                   help="the base checkpoint (spec, see above; default: bundled)")
    p.add_argument("tuned", metavar="TUNED", nargs="*",
                   help="fine-tuned checkpoints (specs; default with no --manifest: bundled:tuned)")
    p.add_argument("--manifest", metavar="FILE", help="checkpoints to compare: one spec per line, or a CSV with "
                   "'checkpoint' and 'label' columns (added to any TUNED given)")
    p.add_argument("--model", metavar="NAME", default=None,
                   help="open_clip architecture of checkpoint file paths (default: the base's)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write results/, summary.csv/.parquet, report.html and compare.json here (reruns resume)")
    p.add_argument("--png", action="store_true", help="with --out: also write each figure as a PNG")
    p.add_argument("--label", action="store_true",
                   help="explain the directions of both models with concepts (runs inspect on every checkpoint)")
    p.add_argument("--vocab", metavar="SPEC", default=None, help="concept vocabulary for --label (inspect's default)")
    p.add_argument("--n-directions", type=int, default=None, metavar="N",
                   help="with --label: explain only the N leading directions of each head")
    p.add_argument("--layers", metavar="LIST", default=None, help="compare only these layers, e.g. 0,3-5,-1")
    p.add_argument("--heads", metavar="LIST", default=None, help="compare only these heads, e.g. 0-3")
    t = p.add_argument_group("verdict thresholds")
    t.add_argument("--cos-threshold", type=float, default=DEFAULTS["cos_threshold"],
                   help="match cosine below which a direction counts as rotated (default %(default)s = 36.9 deg)")
    t.add_argument("--ratio-tol", type=float, default=DEFAULTS["ratio_tol"],
                   help="|sigma ratio - 1| above which a matched direction counts as reweighted (default %(default)s)")
    t.add_argument("--change-tol", type=float, default=DEFAULTS["change_tol"],
                   help="relative change at or below which a head is unchanged (default %(default)s; the dtype "
                        "noise floor applies too)")
    t.add_argument("--noise-factor", type=float, default=DEFAULTS["noise_factor"],
                   help="a head within this many times its expected storage-rounding change is unchanged "
                        "(default %(default)s; 0: off)")
    t.add_argument("--tie-factor", type=float, default=DEFAULTS["tie_factor"],
                   help="neighbouring directions whose singular values differ by at most this times the head's "
                        "change (spectral norm) are compared as one subspace (default %(default)s)")
    t.add_argument("--epsilon", type=float, default=DEFAULTS["epsilon"],
                   help="intruder threshold on the best |cos| with the base directions (default %(default)s)")
    r = p.add_argument_group("where to run")
    r.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="address of a running Dask scheduler (e.g. tcp://host:8786); default: a local cluster")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local cluster size (default: sized to CPU cores and memory)")
    r.add_argument("--in-process", action="store_true", help="no Dask: one checkpoint after another here")
    p.add_argument("--top", type=int, default=5, metavar="N", help="most changed heads to list (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle torch checkpoints in full (they hold objects other than tensors); "
                        "only for files you trust: unpickling can run code")
    p.set_defaults(func=run)


def run(args) -> int:
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    tuned = [(t, t) for t in args.tuned]
    if args.manifest:
        tuned += read_manifest(args.manifest)
    if not tuned:
        tuned = [("bundled:tuned", "bundled:tuned")]
    result = run_harness(
        args.base, tuned, args.out, model=args.model, scheduler=args.scheduler, workers=args.workers,
        in_process=args.in_process, label=args.label, vocabulary=args.vocab, n_directions=args.n_directions,
        layers=layers, heads=heads, progress=not args.quiet, cos_threshold=args.cos_threshold,
        ratio_tol=args.ratio_tol, change_tol=args.change_tol, noise_factor=args.noise_factor,
        tie_factor=args.tie_factor, epsilon=args.epsilon, trust_checkpoint=args.trust_checkpoint,
    )
    if len(result.comparisons) <= 3:
        for c in result.comparisons:
            print(c.summary(n_heads=args.top))
            print()
    print(f"{len(result.rows)} checkpoint(s) {result.where}: {len(result.failed)} failed, "
          f"{len(result.skipped)} reused from an earlier run")
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    if result.written:
        print("wrote " + ", ".join(str(p) for k, p in result.written.items() if k in ("csv", "parquet", "html", "json")))
    for row in result.failed:
        print(f"weightscope: {row['label']}: {row['error']}", file=sys.stderr)
    # 2 when nothing could be compared (as for any bad input), 1 when some checkpoints failed
    return 0 if not result.failed else (2 if len(result.failed) == len(result.rows) else 1)
