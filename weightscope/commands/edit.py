"""``weightscope edit``: suppress or amplify directions chosen by a text query (or listed), save a checkpoint.

    weightscope edit [MODEL] [--pretrained TAG | --checkpoint PATH]
                     (--suppress QUERY | --amplify QUERY | --concept NAME | --direction L:H:I[=A])
                     [--layers 3,4-5] [--heads ..] [--top N | --threshold T] [--alpha A]
                     [--by joint|explanation] [--vocab NAME|PATH|none] [--inspection inspection.json]
                     --out edited.safetensors [--overwrite] [--dry-run]
"""
from __future__ import annotations

import argparse
import difflib
import math
from pathlib import Path

from ..core.errors import WeightscopeError
from . import default_out, add_layer_head_arguments, add_model_arguments, add_output_argument, add_quiet_argument, add_vocab_argument, check_outputs, parse_indices, run_inputs

AUTO = "auto"
EDIT_OUT = f"{default_out('edit')}/edited.safetensors"
EDIT_OUT_HF = f"{default_out('edit')}/edited"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "edit",
        help="suppress or amplify head directions and save a checkpoint open_clip loads",
        description="Rescale singular directions of attention heads' value-output matrices, chosen by a text "
                    "query (closest joint-space images) or listed explicitly, and save the edited model as a "
                    ".safetensors checkpoint that stock open_clip loads, with a JSON record next to it.",
    )
    add_model_arguments(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--suppress", metavar="QUERY", action="append",
                      help="remove (alpha 0) the directions closest to this text; repeat for several queries")
    what.add_argument("--amplify", metavar="QUERY", action="append",
                      help="amplify (alpha 2) the directions closest to this text; repeat for several queries")
    what.add_argument("--concept", metavar="NAME", action="append",
                      help="edit the directions whose concept explanation names this concept (alpha 0 unless "
                           "--alpha); repeatable")
    what.add_argument("--direction", metavar="L:H:I[=A]", action="append",
                      help="edit this singular direction (layer:head:index, group as 4+5) by alpha A; repeatable")
    add_layer_head_arguments(p, "search")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--top", type=int, metavar="N", help="edit the N best-scoring directions (default 5)")
    n.add_argument("--threshold", type=float, metavar="T", help="edit every direction scoring at least T (a cosine)")
    p.add_argument("--alpha", type=float, metavar="A",
                   help="singular-value factor (default 0 for --suppress and --direction, 2 for --amplify)")
    p.add_argument("--by", choices=("joint", "explanation"), default="joint",
                   help="score a direction by its joint-space image (default) or by its concept explanation")
    add_vocab_argument(p, default=AUTO, help=(
        "concept vocabulary that centres the query (and explains directions with --by explanation or --concept): "
        "built-in names or files, comma separated; default: shapes_world for the bundled model, general "
        "otherwise; 'none' disables centring"))
    p.add_argument("--inspection", metavar="JSON",
                   help="with --concept: take the explanations from this inspection.json (written by `weightscope "
                        "inspect` on the same model) instead of explaining the searched heads now")
    add_output_argument(p, "edit", kind="file", overwrite=True,
                        help=f"where to save the edited checkpoint (.safetensors; its record goes to PATH.json; "
                             f"default {EDIT_OUT}, for a transformers model the folder {EDIT_OUT_HF})")
    p.add_argument("--dry-run", action="store_true", help="show the chosen directions, save nothing")
    p.add_argument("--eval-classes", metavar="LIST|FILE",
                   help="with --eval-images: class names (a,b,c or a file, one a line) of a zero-shot task whose "
                        "accuracy is reported before and after the edit (the bundled model: its shapes tasks)")
    p.add_argument("--eval-images", metavar="DIR",
                   help="with --eval-classes: a folder with one subfolder of images per class, named as the class")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def _select_by_concepts(loaded, args, alpha):
    """Edits for --concept: directions whose explanation (from --inspection, or computed now) names a concept."""
    from ..analyses.inspection import Inspection
    from ..analyses.select import best_edits, select_by_concepts
    from ..bundled import inspect_model
    from ..concepts.explainer import ConceptExplainer

    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    if args.inspection:
        if args.vocab != AUTO:
            raise WeightscopeError("--vocab does not apply with --inspection: its explanations are used as saved")
        inspection = Inspection.from_json(args.inspection)
        if inspection.model != loaded.identity:
            raise WeightscopeError(f"{args.inspection} explains {inspection.model}, not the model being edited "
                                   f"({loaded.identity}); run `weightscope inspect` on this model")
        inspection.heads = {k: v for k, v in inspection.heads.items()
                            if (layers is None or k[0] in layers) and (heads is None or k[1] in heads)}
    else:
        if str(args.vocab).lower() == "none":
            raise WeightscopeError("--concept needs a vocabulary to explain directions with; drop --vocab none")
        explainer = ConceptExplainer(vocabulary=None if args.vocab == AUTO else args.vocab)
        inspection = inspect_model(loaded, explainer, layers=layers, heads=heads, progress=not args.quiet)
    top = args.top if args.top is not None else (None if args.threshold is not None else 5)
    edits = best_edits(select_by_concepts(inspection, args.concept, alpha=alpha), top, args.threshold)
    if not edits:
        known = sorted({c for rep in inspection.heads.values() for d in rep.directions for c in d.concepts})
        near = [c for q in args.concept for c in difflib.get_close_matches(q, known, n=3)]
        hint = f"; explanations name e.g. {', '.join(repr(c) for c in near)}" if near else ""
        raise WeightscopeError(f"no explained direction names {' or '.join(repr(c) for c in args.concept)}"
                               f"{' with a score of at least ' + str(args.threshold) if args.threshold else ''}{hint}")
    print(f"concept: directions explained by {' / '.join(repr(c) for c in args.concept)} "
          f"(explanations of {inspection.model}, vocabulary {inspection.vocabulary}, alpha {alpha:g})")
    selection = {"mode": "concept", "concepts": list(args.concept), "vocabulary": inspection.vocabulary,
                 "inspection": str(args.inspection) if args.inspection else None, "layers": layers, "heads": heads,
                 "top": top, "threshold": args.threshold}
    return edits, selection


def run(args: argparse.Namespace) -> int:
    from ..analyses.edit import apply_edits, parse_edit, plan_edits, save_checkpoint
    from ..analyses.select import select_by_query
    from ..bundled import load_model
    from ..concepts.explainer import ConceptExplainer

    from ..models.adapters.hf_clip import is_hf_spec

    if args.out is None and not args.dry_run:
        args.out = EDIT_OUT_HF if is_hf_spec(args.model) else EDIT_OUT
    if args.out is not None:
        out = Path(args.out)

        if out.suffix != ".safetensors" and not is_hf_spec(args.model):
            raise WeightscopeError(f"--out {out} must end in .safetensors (open_clip reads that format)")
        side = out.with_name(out.name + ".json")  # edit.sidecar_path, without importing torch yet
        if not args.dry_run:
            check_outputs(args, [out, side], kind="file")
            for p in (out, side):
                if not args.overwrite and p.exists():
                    raise WeightscopeError(f"{p} already exists; choose another --out or pass --overwrite")
    if args.alpha is not None and not math.isfinite(args.alpha):
        raise WeightscopeError(f"--alpha must be a finite number, got {args.alpha}")
    if args.top is not None and args.top < 1:
        raise WeightscopeError(f"--top must be at least 1, got {args.top}")
    if args.direction and (args.top is not None or args.threshold is not None or args.layers or args.heads):
        raise WeightscopeError("--top/--threshold/--layers/--heads choose among query matches; "
                               "with --direction list the directions themselves")

    if (args.eval_classes is None) != (args.eval_images is None):
        raise WeightscopeError("--eval-classes and --eval-images go together (class names, and a folder with one "
                               "subfolder of images per class)")
    if args.eval_images is not None and not Path(args.eval_images).is_dir():
        raise WeightscopeError(f"--eval-images {args.eval_images}: not a folder; give a folder with one subfolder "
                               "of images per class")
    if args.inspection and not args.concept:
        raise WeightscopeError("--inspection only serves --concept (it holds the concept explanations)")
    if args.inspection and not Path(args.inspection).is_file():
        raise WeightscopeError(f"--inspection {args.inspection}: no such file (write it with `weightscope inspect`)")
    for option in ("layers", "heads"):  # read the lists now, before the model is loaded
        parse_indices(getattr(args, option), f"--{option}")
    if args.vocab not in (AUTO, None) and str(args.vocab).lower() != "none":
        from ..concepts.vocab import check_vocabulary_spec

        check_vocabulary_spec(args.vocab)

    queries = args.suppress or args.amplify
    mode = ("suppress" if args.suppress else "amplify" if args.amplify else "concept" if args.concept
            else "direction")
    alpha = args.alpha if args.alpha is not None else (2.0 if mode == "amplify" else 0.0)
    if mode == "concept" and alpha == 1:
        raise WeightscopeError("--alpha 1 leaves the directions unchanged; use 0 to remove, above 1 to amplify")
    if mode == "suppress" and alpha >= 1:
        raise WeightscopeError(f"--suppress needs --alpha below 1 (0 removes), got {alpha:g}; use --amplify to amplify")
    if mode == "amplify" and alpha <= 1:
        raise WeightscopeError(f"--amplify needs --alpha above 1, got {alpha:g}; use --suppress to weaken")

    loaded = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                        trust_checkpoint=args.trust_checkpoint)
    selection: dict = {"mode": mode}
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    if mode == "direction":
        selection["directions"] = list(args.direction)
    elif mode != "concept":
        vocab = args.vocab
        if vocab == AUTO:
            vocab = "shapes_world" if loaded.name == "shapes-vit" else "general"  # bundled, edited or not
        vocab = None if str(vocab).lower() == "none" else vocab
        selection.update(queries=queries, by=args.by, vocabulary=vocab, layers=layers, heads=heads,
                         top=args.top if args.top is not None or args.threshold is not None else 5,
                         threshold=args.threshold)

    def choose(weights):
        print(f"model: {loaded.identity} ({weights.n_layers} layers x {weights.n_heads} heads, width {weights.width})")
        if mode == "direction":
            return [parse_edit(t, alpha=alpha) for t in args.direction]
        if mode == "concept":
            edits, chosen = _select_by_concepts(loaded, args, alpha)
            selection.update(chosen)
            return edits
        explainer = ConceptExplainer(vocabulary=selection["vocabulary"])
        edits = select_by_query(loaded, queries, alpha=alpha, top=args.top, threshold=args.threshold,
                                weights=weights, layers=layers, heads=heads, by=args.by, explainer=explainer,
                                progress=not args.quiet)
        if not edits:
            raise WeightscopeError(f"no direction scored at least {args.threshold} for {queries}; "
                                   "lower --threshold or use --top N")
        how = f"threshold {args.threshold}" if args.threshold is not None else f"top {selection['top']}"
        where = f"layers {args.layers}" if args.layers else "all layers"
        print(f"{mode}: directions closest to {' / '.join(repr(q) for q in queries)} "
              f"(by {args.by}, {how}, {where}, alpha {alpha:g})")
        return edits

    plan = plan_edits(loaded, choose)
    weights, resolved = plan.weights, plan.edits
    for e, s in zip(resolved, plan.sigmas):
        score = f"score {e.score:.3f}  " if e.score is not None else ""
        print(f"  {e.label():<14} sigma {' '.join(f'{x:.3g}' for x in s):<6} alpha {e.alpha:<4g} {score}{e.reason}")
    weak = weak_selection(mode, resolved)
    if weak:
        print(f"warning: {weak}")
    if args.dry_run:
        print("dry run: nothing saved")
        return 0
    edited = apply_edits(loaded, resolved, weights=weights)
    effect = edit_effect(loaded, edited, args)
    if effect is not None:
        selection["effect"] = effect
        print(f"zero-shot accuracy before -> after ({effect['what']}): " + ", ".join(
            f"{task} {effect['before'][task]:.3f} -> {effect['after'][task]:.3f}" for task in effect["before"]))
    if weak:
        selection["warning"] = weak
    if weights.family == "transformers.CLIP":
        return _save_transformers(edited, args, selection)
    path, side = save_checkpoint(edited, args.out, selection=selection, overwrite=args.overwrite,
                                 protect=run_inputs(args))
    size = path.stat().st_size / 2**20
    print(f"saved edited checkpoint: {path} ({size:.1f} MiB)")
    print(f"edit record: {side}")
    hint = "weightscope.bundled.load_model(PATH), or " if loaded.name == "shapes-vit" else ""
    options = "".join(f", {k}={v!r}" for k, v in
                      loaded.model._weightscope_provenance["architecture"]["options"].items())
    print(f"load it with: weightscope inspect {path}, or {hint}"
          f"open_clip.create_model({loaded.name!r}, pretrained={str(path)!r}{options})")
    return 0


def _save_transformers(edited, args, selection) -> int:
    """Save an edited transformers CLIP as a from_pretrained folder (--out is a folder, not a .safetensors file)."""
    from ..models.adapters.hf_clip import is_hf_folder, save_folder

    out = Path(args.out)
    if out.suffix == ".safetensors":
        raise WeightscopeError(f"--out {out}: a transformers model is saved as a folder (config.json + "
                               "model.safetensors); give a folder path")
    source = args.model if is_hf_folder(args.model or "") else None
    path = save_folder(edited, out, selection=selection, source_folder=source, overwrite=args.overwrite)
    print(f"saved edited model folder: {path} (config.json, model.safetensors, weightscope.json edit record)")
    print(f"load it with: weightscope inspect {path}, or transformers.CLIPModel.from_pretrained({str(path)!r})")
    return 0


WEAK_SCORE = 0.2  # a chosen direction below this score carries little of the query or concept


def weak_selection(mode: str, edits) -> str | None:
    """The warning for a choice that carries little of what was asked, or None. The rule: for --suppress/--amplify
    (score: cosine between a direction's joint-space image and the query) and --concept (score: the concept's COMP
    coefficient in the direction's explanation), warn when the best chosen direction scores below WEAK_SCORE."""
    scores = [e.score for e in edits if e.score is not None]
    if mode in ("direction",) or not scores or max(scores) >= WEAK_SCORE:
        return None
    what = "cosine with the query" if mode != "concept" else "coefficient in the explanation"
    return (f"the chosen directions carry little of what was asked (best score {max(scores):.2f} < {WEAK_SCORE}, "
            f"{what}); the edit may change little: check the accuracy below, or choose with --by explanation, "
            "another query or --direction")


def edit_effect(loaded, edited, args) -> dict | None:
    """Zero-shot accuracy before and after the edit (``edited``: the LoadedModel apply_edits returned): the
    shapes-world tasks for the bundled model, the --eval-classes task on --eval-images otherwise (None when
    neither applies)."""
    if args.eval_classes is not None:
        return _folder_effect(loaded, edited, args)
    from ..bundled import EDIT_EVAL_IMAGES, is_bundled, shapes_accuracies

    if not is_bundled(loaded):
        return None
    return {"what": f"shapes-world tasks, {EDIT_EVAL_IMAGES} generated scenes", "before": shapes_accuracies(loaded),
            "after": shapes_accuracies(edited)}


def _folder_effect(loaded, edited, args) -> dict:
    import numpy as np

    from ..analyses.sing.inputs import folder_images
    from ..analyses.zeroshot import zero_shot_accuracy, zero_shot_head

    spec = args.eval_classes
    names = ([ln.strip() for ln in Path(spec).read_text().splitlines() if ln.strip()] if Path(spec).is_file()
             else [c.strip() for c in spec.split(",") if c.strip()])
    images, labels = [], []
    for i, name in enumerate(names):
        folder = Path(args.eval_images) / name
        if not folder.is_dir():
            raise WeightscopeError(f"--eval-images {args.eval_images} has no subfolder {name!r} for that class")
        pil = folder_images(folder, 200)[1]
        images += pil
        labels += [i] * len(pil)
    def accuracy(model_loaded):
        head = zero_shot_head(model_loaded, names)
        x = _preprocess(model_loaded, images)
        return zero_shot_accuracy(model_loaded.model, x, np.array(labels), head.weight)["accuracy"]

    return {"what": f"{len(names)}-class zero-shot task on {len(images)} images from {args.eval_images}",
            "before": {"accuracy": accuracy(loaded)}, "after": {"accuracy": accuracy(edited)}}


def _preprocess(loaded, images):
    import torch

    return torch.stack([loaded.preprocess(im) for im in images])
