"""`weightscope sing`: the null space of a classifier head and what it hides (SING, data-free on CLIP heads).

    weightscope sing                                   # bundled model, its 8 shape classes
    weightscope sing ViT-B-32 --pretrained openai --classes cifar10 --image cat.jpg --text "a snowy background"
    weightscope sing --classifier bundled-cnn                # a trained classifier through a translator (SING part 2)
    weightscope sing --classifier model.pt --trust-checkpoint --images DIR [--translator T.safetensors] [--texts FILE]
    weightscope sing --classifier resnet20.th                # a state dict's last linear layer: geometry only

Writes ``sing.json`` and ``sing.html`` into ``--out`` (and, with --classifier, the translator used,
``translator.safetensors``), all or none.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import WeightscopeError
from . import add_model_arguments, add_output_argument, add_quiet_argument, add_solver_arguments, add_vocab_argument, check_solver_arguments, explainer_from_args


def register(sub) -> None:
    p = sub.add_parser("sing", help="null space of a classifier head: what it sees, what it is blind to",
                       description="SING null-space analysis of a zero-shot head (or of a classifier's linear head).",
                       allow_abbrev=False)
    add_model_arguments(p)
    p.add_argument("--classes", default=None,
                   help="'shapes', a built-in list (e.g. cifar10), a file (one class per line) or 'a,b,c' "
                        "(default: shapes for the bundled model)")
    add_vocab_argument(p, help="concept vocabulary spec, e.g. 'general' or 'shapes_world,general:5000' "
                               "(default: shapes_world for the bundled model, general otherwise)")
    p.add_argument("--image", help="image file whose embedding is f (default: a gallery image, else a class prompt)")
    p.add_argument("--text", action="append", help="text to steer towards / away from (repeatable; default: the "
                                                    "concept the head is most blind to)")
    p.add_argument("--gallery", help="folder of images for equivalent images by retrieval "
                                     "(default: the shapes world for the bundled model)")
    p.add_argument("--image-score", type=float, default=40.0, help="IS in degrees at which |AS| is reported (40)")
    add_solver_arguments(p)  # --method --k --lambda --directions (here: row / null directions to explain)
    p.set_defaults(directions=4)
    p.add_argument("--normalize", default="splice", help="concept normalisation: splice (default), l2 or none")
    p.add_argument("--rtol", type=float, default=None, help="relative rank tolerance (default 1e-6)")
    p.add_argument("--classifier", metavar="SPEC",
                   help="analyse a trained classifier through a translator into MODEL's image space instead: "
                        "bundled-cnn, bundled-vit, a weightscope classifier (.safetensors + .json), or a whole "
                        "nn.Module saved with torch.save (needs --trust-checkpoint); a state dict FILE[:KEY] gives "
                        "the head's geometry only (KEY: the weight's name, default the last 2-D tensor)")
    p.add_argument("--translator", metavar="PATH|KIND",
                   help="with --classifier: a saved translator file, or the kind to fit: linear (ridge, penalty by "
                        "cross-validation; default) or mlp")
    p.add_argument("--images", metavar="DIR",
                   help="with --classifier: folder of images to analyse and, for a classifier of yours, to fit the "
                        "translator on (bundled-cnn / bundled-vit: their translator is always fitted on generated "
                        "shapes-world scenes, which they also analyse by default)")
    p.add_argument("--texts", metavar="FILE",
                   help="with --classifier: texts to score, one per line (default: the shapes world's attribute texts "
                        "for the bundled classifiers, 'an image of a <class>' otherwise); --text adds more")
    add_output_argument(p, default="weightscope-out", help="output folder for sing.json and sing.html, and with "
                                                          "--classifier translator.safetensors (default weightscope-out)")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def _write_outputs(out: Path, json_text: str, html: str) -> tuple[Path, Path]:
    from ..core.fileio import outputs, write_atomic

    # both texts exist before either file is written, and the two files appear together or not at all
    with outputs():
        written = write_atomic(out / "sing.json", json_text), write_atomic(out / "sing.html", html)
    return written


def _load_classifier(spec: str, trust: bool):
    """The Classifier --classifier names, or None for a plain state dict (FILE[:KEY]: the geometry-only path)."""
    from ..bundled import load_classifier
    from ..models.classifiers import StateDictOnly

    path, _, key = spec.rpartition(":")
    if not Path(spec).exists() and path and key and Path(path).is_file():
        return None
    try:
        return load_classifier(spec, trust=trust)
    except StateDictOnly:
        return None


def _run_classifier(args, clf, rtol: float) -> int:
    from ..core.fileio import check_writable, outputs, write_atomic
    from ..reports.sing import render_classifier_report
    from ..analyses.sing import SingOptions
    from ..analyses.sing.classifier import TRANSLATOR_KINDS, read_texts
    from ..analyses.sing.translator import save_translator
    from ..bundled import ModelSpec, classifier_analysis

    if args.classes is not None:
        raise WeightscopeError("--classes does not apply with --classifier: the classes are the classifier's own "
                               "(class_names in its JSON config or sidecar)")
    if args.image is not None:
        raise WeightscopeError("--image does not apply with --classifier: give a folder of images with --images")
    texts = (read_texts(args.texts) if args.texts else []) + list(args.text or [])
    check_writable(args.out, kind="dir")
    options = SingOptions(image_score=args.image_score, rtol=rtol, n_directions=args.directions)
    model = ModelSpec(args.model, args.pretrained, args.checkpoint, args.trust_checkpoint)
    result = classifier_analysis(clf, model, translator=args.translator, images=args.images, texts=texts or None,
                                 gallery=args.gallery, explainer=explainer_from_args(args), options=options,
                                 trust=args.trust_checkpoint, progress=not args.quiet)
    out = Path(args.out)
    json_text, html, summary = result.to_json(), render_classifier_report(result), result.summary()
    # the translator the run used is always written beside its reports (no stale one from an earlier run), except
    # when it was read from that very file
    dest = out / "translator.safetensors"
    reused = (args.translator not in (None, *TRANSLATOR_KINDS) and dest.exists()
              and os.path.samefile(args.translator, dest))
    with outputs():
        paths = [write_atomic(out / "sing.json", json_text), write_atomic(out / "sing.html", html)]
        if not reused:
            paths.append(save_translator(result.translator_object, dest))
    # written before anything is printed: a closed stdout (e.g. piped into head) cannot cost the results
    print(summary)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def _run_head(args, rtol: float) -> int:
    from ..core.fileio import dump_json
    from ..models.linear_heads import linear_head
    from ..models.checkpoints import read_checkpoint
    from ..reports.sing import render_head_page
    from ..analyses.sing import head_geometry

    if args.model or args.pretrained or args.checkpoint or args.image or args.text or args.gallery:
        raise WeightscopeError("--classifier analyses a plain classifier head: do not combine it with a CLIP model, "
                               "--image, --text or --gallery")
    text, key = args.classifier, None
    if not Path(text).is_file() and ":" in text:
        text, key = text.rsplit(":", 1)
    state = read_checkpoint(text, trust=args.trust_checkpoint).state_dict
    names = None
    if args.classes:
        from ..analyses.sing import parse_classes

        names = parse_classes(args.classes)[0]
    head = linear_head(state, names, key=key)
    geom = head_geometry(head, rtol)
    summary = {"format": "weightscope-sing-head/1", "source": f"{Path(text).name}:{head.feature_space}",
               "classes": list(head.class_names), "n_classes": head.n_classes, "n_features": head.n_features,
               "feature_space": head.feature_space, "rank": geom.rank, "null_dim": geom.null_dim, "rtol": geom.rtol,
               "singular_values": [float(x) for x in geom.s]}
    print(f"{summary['source']}: {head.n_classes} classes x {head.n_features} features; rank {geom.rank}, null space "
          f"{geom.null_dim}-d (rtol {geom.rtol:g}); singular values " + " ".join(f"{x:.3g}" for x in geom.s))
    paths = _write_outputs(Path(args.out), dump_json(summary), render_head_page(summary))
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0


def run(args) -> int:
    from ..core.linalg import RANK_RTOL

    rtol = RANK_RTOL if args.rtol is None else args.rtol
    if not 0.0 <= rtol < 1.0:
        raise WeightscopeError(f"--rtol {rtol}: give a relative tolerance in [0, 1), e.g. 1e-6")
    check_solver_arguments(args)
    if args.classifier:
        clf = _load_classifier(args.classifier, args.trust_checkpoint)
        if clf is None:
            for opt in ("translator", "images", "texts"):
                if getattr(args, opt) is not None:
                    raise WeightscopeError(f"--classifier {args.classifier} is a state dict (weights, no architecture), "
                                           f"so --{opt} cannot be used: give a whole module saved with torch.save "
                                           "(with --trust-checkpoint) or a weightscope classifier")
            return _run_head(args, rtol)
        return _run_classifier(args, clf, rtol)
    for opt in ("translator", "images", "texts"):
        if getattr(args, opt) is not None:
            raise WeightscopeError(f"--{opt} needs --classifier (the classifier whose null space is read through a "
                                   "translator)")
    from ..analyses.sing import SingOptions, parse_classes
    from ..bundled import ModelSpec, shape_classes, sing_analysis
    from ..reports.sing import render_report

    classes = args.classes
    if classes is None:
        if args.model is not None:
            raise WeightscopeError("give --classes for a model other than the bundled one, e.g. --classes cifar10 "
                                   "or --classes cat,dog,bird")
        classes = "shapes"
    classes = shape_classes() if classes == "shapes" else classes
    parse_classes(classes)           # bad class lists fail before the model loads
    options = SingOptions(image_score=args.image_score, rtol=rtol, n_directions=args.directions)
    model = ModelSpec(args.model, args.pretrained, args.checkpoint, args.trust_checkpoint)
    result = sing_analysis(model, classes, explainer_from_args(args), image=args.image, texts=args.text,
                           gallery=args.gallery, options=options, progress=not args.quiet)
    print(result.summary())
    paths = _write_outputs(Path(args.out), result.to_json(), render_report(result))
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0
