"""`weightscope inspect`: explain every head of a model; print a summary, write JSON and an HTML report."""
from __future__ import annotations

from pathlib import Path

from ..errors import WeightscopeError
from . import add_model_arguments, parse_indices


def register(sub) -> None:
    p = sub.add_parser("inspect", help="explain what each attention head writes and reads",
                       description="Explain each head's value-output singular directions with concepts.")
    add_model_arguments(p)
    p.add_argument("--layers", help="layer indices, e.g. '10,11' or '0-3' or '-1' (default: all)")
    p.add_argument("--heads", help="head indices (default: all)")
    p.add_argument("--vocab", default=None,
                   help="vocabulary: built-in names or files, with optional limits, e.g. 'shapes_world,general:5000' "
                        "(default: that for the bundled model, 'general' otherwise)")
    p.add_argument("--k", type=int, default=5, help="concepts per direction (default 5)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3, help="COMP coherence weight (default 0.3)")
    p.add_argument("--method", default="comp", help="comp, nnomp, omp, mp or topk (default comp)")
    p.add_argument("--directions", type=int, default=None, help="explain only the leading N directions per head")
    p.add_argument("--what", default="vo", help="what to explain, a comma list of vo (value-output), qk (query-key), "
                                                "mlp (MLP neurons) (default vo)")
    p.add_argument("--image-mean", help="modality-gap correction: a .npy vector or a folder of images")
    p.add_argument("--show", type=int, default=2, help="directions per head in the printed summary (default 2)")
    p.add_argument("--out", default="weightscope-out", help="output folder for inspection.json and report.html")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..inspection import image_mean_from_folder, inspect_model, parse_what
    from ..load import load_model
    from ..reports.inspection import write_report

    what = parse_what(args.what)  # before loading: a typo costs nothing

    loaded = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                        trust_checkpoint=args.trust_checkpoint)
    if loaded.source == "random-init":
        print(f"note: {loaded.name} has random weights (no --pretrained or --checkpoint given)")
    image_mean = None
    if args.image_mean:
        path = Path(args.image_mean)
        if path.is_dir():
            image_mean = image_mean_from_folder(loaded, path)
        elif path.suffix == ".npy" and path.is_file():
            image_mean = np.load(path)
        else:
            raise WeightscopeError(f"--image-mean {path}: give a .npy file or a folder of images")
    result = inspect_model(loaded, args.vocab, layers=parse_indices(args.layers, "--layers"), heads=parse_indices(args.heads, "--heads"),
                           method=args.method, k=args.k, lam=args.lam, n_directions=args.directions,
                           image_mean=image_mean, what=what)
    print(result.summary(n_directions=args.show))
    out = Path(args.out)
    json_path = out / "inspection.json"
    result.to_json(json_path)
    html_path = write_report(result, out / "report.html")
    print(f"\nwrote {json_path} and {html_path}")
    return 0
