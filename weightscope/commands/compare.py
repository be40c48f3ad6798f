"""``weightscope compare [BASE] [TUNED ...] [--manifest FILE]``: how fine-tuning changed each attention head.

Examples::

    weightscope compare                                           # the shipped shapes-world pair
    weightscope compare bundled bundled:tuned --out cmp/
    weightscope compare --what qk                                 # the query-key matrices instead
    weightscope compare ViT-B-32:openai ft1.safetensors ft2.pt --out cmp/      # paths: the base's architecture
    weightscope compare ViT-B-16:openai --manifest runs.csv --out cmp/ --scheduler tcp://head:8786
    weightscope compare ViT-B-16:openai --manifest runs.csv --out cmp/ --shard $SLURM_ARRAY_TASK_ID/16
    weightscope compare --merge cmp/                              # summary and report of the shards' results
    weightscope compare ViT-B-16:openai --manifest runs.csv --out cmp/ --cluster slurm --cluster-config slurm.toml
    weightscope compare bundled a.safetensors b.safetensors --out zoo/ --zoo     # + spectra, family tree, zoo.html
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ..core.defaults import CHECKPOINT_SUFFIXES, SPEC_HELP
from ..core.defaults import COMPARE_DEFAULTS as DEFAULTS
from ..core.errors import WeightscopeError
from . import add_directions_argument, add_layer_head_arguments, add_output_argument, add_quiet_argument, add_trust_argument, add_vocab_argument, check_outputs, explainer_from_args, parse_indices


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
    add_layer_head_arguments(p, "compare")
    p.add_argument("--what", default="vo", choices=("vo", "qk", "mlp"),
                   help="which matrices to compare: vo (each head's value-output, default), qk (each head's "
                        "query-key; refused on layers with QK-norm or cosine attention) or mlp (each layer's MLP "
                        "write matrix as one unit, reported as head 0)")
    add_output_argument(p, help="write results/, summary.csv/.parquet, report.html and compare.json here "
                                "(reruns resume)")
    p.add_argument("--png", action="store_true", help="with --out: also write each figure as a PNG")
    p.add_argument("--label", action="store_true",
                   help="explain the directions of both models with concepts (runs inspect on every checkpoint)")
    add_vocab_argument(p, help="concept vocabulary for --label (default: inspect's)")
    add_directions_argument(p)
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
    r.add_argument("--shard", metavar="I/N", default=None,
                   help="compare only the I-th of N slices of the checkpoints, here (one task of an array job: "
                        "--shard $SLURM_ARRAY_TASK_ID/N with --array=1-N); needs --out; then --merge")
    r.add_argument("--merge", metavar="DIR", default=None,
                   help="build summary.csv/.parquet, compare.json and the reports from the shards' results in DIR; "
                        "lists the checkpoints of missing shards")
    r.add_argument("--cluster", choices=("slurm", "pbs", "sge", "local"), default=None,
                   help="start workers as batch jobs through dask-jobqueue (local: its local test cluster)")
    r.add_argument("--cluster-config", metavar="FILE", default=None,
                   help="TOML or JSON settings of --cluster: queue, cores, memory, walltime, jobs, ...")
    p.add_argument("--zoo", action="store_true",
                   help="also spectral diagnostics of every checkpoint, the zoo's family tree (MoTHer) and zoo.html")
    p.add_argument("--top", type=int, default=5, metavar="N", help="most changed heads to list (default 5)")
    add_quiet_argument(p)
    add_trust_argument(p)
    p.set_defaults(func=run)




def split_specs(specs: list[str]) -> tuple[list[str], str | None]:
    """Strip the NAME of NAME:PATH specs; returns (specs, the one architecture NAME or None)."""
    from ..analyses.compare.checkpoints import name_and_path

    names, out = set(), []
    for spec in specs:
        named = name_and_path(str(spec))
        if named is not None:
            names.add(named[0])
        out.append(named[1] if named is not None else spec)
    if len(names) > 1:
        raise WeightscopeError(f"the checkpoints name different architectures ({', '.join(sorted(names))}); "
                               "compare needs one")
    return out, names.pop() if names else None


def run_merge(args) -> int:
    given = [n for n, v in (("TUNED", args.tuned), ("--manifest", args.manifest), ("--out", args.out),
                            ("--shard", args.shard), ("--cluster", args.cluster), ("--scheduler", args.scheduler))
             if v] + (["BASE"] if args.base != "bundled" else [])
    if given:
        raise WeightscopeError(f"--merge DIR reads the run's checkpoints and options from DIR/plan.json; drop "
                               f"{', '.join(given)}")
    from ..analyses.harness import merge_harness
    from ..bundled import spec_loading
    from ..reports.compare import write_report
    from ..reports.zoo import write_zoo_report

    result = merge_harness(args.merge, report=write_report, zoo=write_zoo_report, loading=spec_loading(),
                           progress=not args.quiet)
    return _print_result(result, args)


def _print_result(result, args) -> int:
    if len(result.comparisons) <= 3:
        for c in result.comparisons:
            print(c.summary(n_heads=args.top))
            print()
    print(f"{len(result.rows)} checkpoint(s) {result.where}: {len(result.failed)} failed, "
          f"{len(result.skipped)} reused from an earlier run" +
          (f", {len(result.missing)} missing" if result.missing else "") +
          (f", {len(result.replaced)} damaged result(s) recomputed" if result.replaced else ""))
    print(result.table())
    if result.zoo is not None:
        print(result.zoo.tree.summary())
    for row in result.replaced:
        print(f"note: {row['label']}: {row['note']}")
    for note in result.notes:
        print(f"note: {note}")
    if result.written:
        print("wrote " + ", ".join(str(p) for k, p in result.written.items()
                                   if k in ("csv", "parquet", "html", "json", "zoo_html", "zoo_json")))
    for row in result.failed:
        print(f"weightscope compare: error: {row['label']}: {row['error']}", file=sys.stderr)
    for row in result.missing:
        print(f"weightscope compare: error: {row['label']}: missing ({row['note']})", file=sys.stderr)
    # a checkpoint that cannot be compared is bad input (2), even when the others finished and were written
    return 2 if result.failed or result.missing else 0


def run(args) -> int:
    if args.merge is not None:
        return run_merge(args)
    if args.png and args.out is None:
        raise WeightscopeError("--png needs --out DIR (where the figures go)")
    if args.label and args.what != "vo":
        raise WeightscopeError(f"--label explains value-output directions; it does not apply to --what {args.what}: "
                               "drop --label or use --what vo")
    if args.directions is not None and not args.label:
        raise WeightscopeError("--directions applies to --label (how many directions to explain); add --label")
    if args.directions is not None and args.directions < 1:
        raise WeightscopeError(f"--directions must be at least 1, got {args.directions}")
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    if args.label and args.vocab is not None:
        from ..concepts.vocab import check_vocabulary_spec

        check_vocabulary_spec(args.vocab)
    from ..analyses.harness import parse_shard

    placed = [n for n, v in (("--scheduler", args.scheduler), ("--in-process", args.in_process),
                             ("--cluster", args.cluster), ("--shard", args.shard)) if v]
    if len(placed) > 1:
        raise WeightscopeError(f"{' and '.join(placed)} exclude each other: choose one")
    shard = parse_shard(args.shard) if args.shard is not None else None
    if shard and args.out is None:
        raise WeightscopeError("--shard needs --out DIR (the shards' results meet there for --merge)")
    if args.cluster_config is not None and args.cluster is None:
        raise WeightscopeError("--cluster-config applies to --cluster; add --cluster slurm|pbs|sge|local")
    cluster = None
    if args.cluster is not None:
        from ..analyses.zoo.jobqueue import check_cluster, read_cluster_config

        cluster = (args.cluster, read_cluster_config(args.cluster_config))
        check_cluster(*cluster)
    out = Path(args.out) if args.out else None
    check_outputs(args, [out / n for n in ("report.html", "compare.json", "summary.csv")] if out else [], kind="dir")
    specs, model = split_specs([args.base, *args.tuned])

    from ..analyses.harness import read_manifest, run_harness
    from ..bundled import explainer_for_spec, spec_loading
    from ..reports.compare import write_report
    from ..reports.zoo import write_zoo_report

    tuned = [(t, s) for t, s in zip(args.tuned, specs[1:])]
    if args.manifest:
        tuned += read_manifest(args.manifest)
    if not tuned:
        tuned = [("bundled:tuned", "bundled:tuned")]
    from ..analyses.compare.checkpoints import name_and_path

    for spec in (specs[0], *(s for _, s in tuned)):  # a missing file is bad input: say so before any loading
        named = name_and_path(spec)   # NAME:PATH (a manifest's rows may name the architecture)
        path = named[1] if named is not None else spec
        if path.lower().endswith(CHECKPOINT_SUFFIXES) and not Path(path).exists():
            raise WeightscopeError(f"checkpoint {path} does not exist; check the path")
    explainer = explainer_for_spec(specs[0], explainer_from_args(args)) if args.label else None
    loading = spec_loading(args.trust_checkpoint, model)
    result = run_harness(
        specs[0], tuned, args.out, scheduler=cluster or args.scheduler, workers=args.workers,
        in_process=shard or args.in_process,
        explainer=explainer, n_directions=args.directions, progress=not args.quiet, report=write_report,
        loading=loading, layers=layers, heads=heads, kind=args.what, cos_threshold=args.cos_threshold,
        ratio_tol=args.ratio_tol, change_tol=args.change_tol, noise_factor=args.noise_factor,
        tie_factor=args.tie_factor, epsilon=args.epsilon, zoo=write_zoo_report if args.zoo else None,
    )
    if shard:
        print(f"shard {shard[0]}/{shard[1]}: {len(result.rows)} checkpoint(s), {len(result.failed)} failed, "
              f"{len(result.skipped)} reused; merge with: weightscope compare --merge {args.out}")
        for row in result.replaced:
            print(f"note: {row['label']}: {row['note']}")
        for row in result.failed:
            print(f"weightscope compare: error: {row['label']}: {row['error']}", file=sys.stderr)
        return 2 if result.failed else 0
    return _print_result(result, args)
