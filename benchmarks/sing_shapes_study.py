#!/usr/bin/env python
"""SING's CNN-vs-ViT study on the shapes world: which attributes move inside each shape classifier's null space.

    python benchmarks/sing_shapes_study.py [--images N] [--mlp]

For the two shipped shape classifiers (``bundled-cnn``, a small ResNet; ``bundled-vit``, a small ViT; both 8-way
shape classifiers with 64 penultimate features) through a translator T into the bundled CLIP's image space
(ridge, penalty by cross-validation, fitted on generated scenes): the held-out shape accuracy (2,000 images), the
translator's held-out fit, and SING's |AS| at IS = 40 degrees for the texts of each attribute family of the world
(shape, colour, size, position, background) on generated scenes where every attribute is uniform, on SING's
gradient path and on the optimal path (the supremum at that IS); SING's class leakage ("an image of a <predicted
class>"); the visibility of each family's concepts through T; equivalent images by retrieval from the shapes-world
gallery. ``--mlp`` adds the MLP translator.
Prints markdown tables (the README's) and the time taken.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weightscope.models.classifiers import load_classifier  # noqa: E402
from weightscope.models.load import load_model  # noqa: E402
from weightscope import bundled as B  # noqa: E402
from weightscope.shapes import world  # noqa: E402

CLASSIFIERS = ("bundled-cnn", "bundled-vit")
HELD_OUT_SEED = 20_000        # the shapes world's evaluation seed (shapes.evaluate), far from any training stream


def held_out_accuracy(name: str, n: int = 2000) -> float:
    images, scenes = world.single_objects(n, HELD_OUT_SEED, spurious_strength=None)
    clf = load_classifier(name)
    return float(np.mean(np.argmax(clf.logits(images), axis=1) == scenes.shape[:, 0]))


def fmt(x, spec=".1f") -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=B.N_IMAGES, help=f"scenes analysed (default {B.N_IMAGES})")
    ap.add_argument("--mlp", action="store_true", help="also run the MLP translator (slower)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    loaded = load_model()
    runs = {}
    for name in CLASSIFIERS:
        for kind in ("linear", "mlp") if args.mlp else ("linear",):
            t0 = time.perf_counter()
            runs[name, kind] = B.classifier_analysis(name, loaded, translator=kind, n_images=args.images,
                                                     progress=False)
            print(f"{name} ({kind} T): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    acc = {name: held_out_accuracy(name) for name in CLASSIFIERS}
    keys = list(runs)
    label = {k: f"{k[0].removeprefix('bundled-').upper()}" + (f" ({k[1]} T)" if args.mlp else "") for k in keys}

    print("\n| | " + " | ".join(label[k] for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    rows = [
        ("held-out shape accuracy (2,000 images)", lambda k, r: f"{acc[k[0]]:.1%}"),
        ("null space (of F = 64) / its image in E = 64",
         lambda k, r: f"{r.null_dim} / {r.statistics.image_dim if r.statistics.image_dim is not None else 'MLP'}"),
        ("translator held-out mean cosine / R^2",
         lambda k, r: f"{r.translator['report']['mean_cosine']:.3f} / {r.translator['report']['r2']:.3f}"),
        ("ridge penalty (CV)", lambda k, r: fmt(r.translator["report"]["alpha"], ".3g")),
    ]
    for title, get in rows:
        print(f"| {title} | " + " | ".join(get(k, runs[k]) for k in keys) + " |")

    fams = list(B.shapes_texts())
    print(f"\n|AS| at IS = 40 deg, mean over {args.images} scenes x the family's texts "
          "(SING's gradient path; optimal path in brackets; f_row's mean |AS| after the slash)\n")
    print("| family | " + " | ".join(label[k] for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for fam in fams:
        cells = []
        for k in keys:
            r = runs[k]
            g = r.statistics.per_family()[fam]
            o = r.optimal.per_family()[fam]["mean_abs_as"] if r.optimal is not None else None
            cols = [r.statistics.texts.index(t) for t in r.statistics.families[fam]]
            row_abs = float(np.nanmean(np.abs(r.statistics.as_row[:, cols])))
            cells.append(f"{fmt(g['mean_abs_as'])} [{fmt(o)}] / {fmt(row_abs)}")
        print(f"| {fam} | " + " | ".join(cells) + " |")
    print("| class leakage: 'an image of a <predicted class>' | "
          + " | ".join(fmt(runs[k].class_leakage["mean_abs_as"]) for k in keys) + " |")
    print("| f_row: mean IS (deg) | " + " | ".join(fmt(runs[k].statistics.overall()["mean_is_row"]) for k in keys)
          + " |")

    print("\nVisibility through T (share of each attribute's concept embeddings outside T(null space), mean per "
          "family; linear T only; a random direction scores the chance level)\n")
    lin = [k for k in keys if runs[k].visibility is not None]
    print("| family | " + " | ".join(label[k] for k in lin) + " |")
    print("|---|" + "---|" * len(lin))
    for fam in fams:
        print(f"| {fam} | " + " | ".join(fmt(runs[k].families.get(fam), ".3f") for k in lin) + " |")
    print("| chance | " + " | ".join(fmt(runs[k].chance_visibility, ".3f") for k in lin) + " |")

    print("\nEquivalent images by retrieval (scene 0 steered towards the text that moves it most):")
    for k in keys:
        ex = runs[k].example
        if ex:
            near = lambda w: "; ".join(c for _, c, _ in ex["neighbours"].get(w, [])[:2])  # noqa: E731
            print(f"- {label[k]}: towards {ex['text']!r}, AS {ex['attribute_score']:+.1f} deg, logits kept to "
                  f"{ex['logit_change']:.0e}: T(f) ~ {near('f')} -> T(f~) ~ {near('f_tilde')}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
