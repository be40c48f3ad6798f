"""``weightscope inspect``: explain every head of a model; print a summary, write JSON and an HTML report.

Examples::

    weightscope inspect                                       # the bundled shapes-world model
    weightscope inspect ViT-B-32 --pretrained openai --layers 10,11 --vocab general:5000 --out vitb32/
    weightscope inspect ViT-B-16 --checkpoint ft.safetensors --image-mean images/
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import WeightscopeError
from . import add_compute_arguments, add_layer_head_arguments, add_model_arguments, add_output_argument, add_quiet_argument, add_resume_argument, add_solver_arguments, add_vocab_argument, check_outputs, check_solver_arguments, explainer_from_args, parse_indices

OUTPUTS = ("inspection.json", "report.html")


def register(sub) -> None:
    p = sub.add_parser("inspect", help="explain what each attention head writes and reads",
                       description="Explain each head's value-output singular directions with concepts.",
                       epilog=__doc__.split("Examples::", 1)[1])
    add_model_arguments(p)
    add_layer_head_arguments(p, "explain")
    add_vocab_argument(p)
    add_solver_arguments(p)
    p.add_argument("--what", default="vo", metavar="LIST",
                   help="what to explain, a comma list of vo (value-output), qk (query-key), mlp (MLP neurons) "
                        "(default vo)")
    p.add_argument("--image-mean", metavar="NPY|DIR",
                   help="modality-gap correction: a .npy vector or a folder of images")
    p.add_argument("--show", type=int, default=2, metavar="N",
                   help="directions per head in the printed summary (default 2)")
    add_output_argument(p, "inspect", help="output folder for inspection.json and report.html")
    add_compute_arguments(p)
    add_resume_argument(p)
    add_quiet_argument(p)
    p.set_defaults(func=run)


def read_image_mean(path: Path):
    """The --image-mean .npy as a finite float vector (E,), checked before the model is loaded."""
    import numpy as np

    try:
        mean = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise WeightscopeError(f"--image-mean {path}: not a numeric .npy array ({err})") from None
    except OSError as err:
        raise WeightscopeError(f"--image-mean {path}: cannot read it ({err.strerror or err})") from None
    if not isinstance(mean, np.ndarray) or mean.dtype.kind not in "fiu":
        kind = getattr(mean, "dtype", type(mean).__name__)
        raise WeightscopeError(f"--image-mean {path} holds {kind} values; it must hold one vector of numbers")
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 1 and mean.squeeze().ndim != 1:
        raise WeightscopeError(f"--image-mean {path} has shape {mean.shape}; it must be one vector (E,)")
    bad = int(np.count_nonzero(~np.isfinite(mean)))
    if bad:
        raise WeightscopeError(f"--image-mean {path} has {bad} non-finite (NaN or inf) entries; "
                               "compute the mean again from readable images")
    return mean.ravel()


def check_image_folder(folder: Path) -> None:
    """Every image under ``folder`` decodes (cheap next to the model's forward pass); else name the bad one."""
    from ..core.images import check_images, list_images

    check_images(list_images(folder, "--image-mean folder"), "--image-mean image")


def run(args) -> int:
    from ..concepts.vocab import check_vocabulary_spec

    from ..analyses.inspection import parse_what

    what = parse_what(args.what)
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    check_solver_arguments(args)
    explainer = explainer_from_args(args)   # device, precision, backend checked here, before any model is loaded
    if args.vocab is not None:
        check_vocabulary_spec(args.vocab)
    out = Path(args.out)
    check_outputs(args, [out / name for name in OUTPUTS], kind="dir")
    image_mean = None
    if args.image_mean:
        path = Path(args.image_mean)
        if path.is_dir():
            check_image_folder(path)
        elif path.suffix == ".npy" and path.is_file():
            image_mean = read_image_mean(path)
        else:
            raise WeightscopeError(f"--image-mean {path}: give a .npy file or a folder of images")

    from ..analyses.inspection import image_mean_from_folder
    from ..bundled import inspect_model, load_model
    from ..reports.inspection import write_report

    # lazy: a random-init model's blocks are built one at a time as inspect reads them (an image mean needs them all)
    loaded = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                        trust_checkpoint=args.trust_checkpoint,
                        lazy=not (args.image_mean and Path(args.image_mean).is_dir()))
    if loaded.source == "random-init":
        print(f"note: {loaded.name} has random weights (no --pretrained or --checkpoint given)")
    if image_mean is not None:
        import torch

        with torch.no_grad():  # the joint width, from one text embedding: checked before the long work
            width = loaded.model.encode_text(loaded.tokenizer(["a"])).shape[-1]
        if image_mean.shape != (width,):
            raise WeightscopeError(f"--image-mean {args.image_mean} has {image_mean.size} entries; "
                                   f"this model's joint space has {width}")
    elif args.image_mean:
        image_mean = image_mean_from_folder(loaded, args.image_mean, progress=not args.quiet)
    result = inspect_model(loaded, explainer, layers=layers, heads=heads, n_directions=args.directions,
                           image_mean=image_mean, what=what, progress=not args.quiet, resume=not args.no_resume)
    print(result.summary(n_directions=args.show))
    from ..core.fileio import outputs

    with outputs():  # both files or neither; a failed report leaves an earlier run's files as they were
        result.to_json(out / OUTPUTS[0])
        write_report(result, out / OUTPUTS[1])
    print(f"\nwrote {out / OUTPUTS[0]} and {out / OUTPUTS[1]}")
    return 0
