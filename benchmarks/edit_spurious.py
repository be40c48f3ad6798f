"""Suppress the spurious attribute of the shapes world by a weight edit chosen from text alone.

    python benchmarks/edit_spurious.py [--per-group 500] [--val-per-group 250] [--json out.json]

The bundled base model was pre-trained where the background colour predicts the shape family (round on blue,
angular on green, 90%). Zero-shot round-vs-angular classification is evaluated on the balanced group split
(``world.group_split``): worst-group accuracy (a rare group, e.g. "round on green") and average accuracy.

An edit removes (alpha = 0) the head write directions whose joint-space image is closest to a text query about
the background (``weightscope.analyses.select.select_by_query``): no hand-picked heads, no language model, no images
in the selection. The settings swept are principled choices, each named from the world's own vocabulary:
query phrasing, number of directions (top N), layers searched, scoring (joint image or concept explanation)
and query centring (on the shapes_world vocabulary, or none).

Protocol: every setting is evaluated on a validation split (its own seed); the setting chosen on validation
(best worst-group accuracy with average accuracy at most 2 points below the unedited model's, ties -> fewer
directions) is then reported on the separate test split, so the reported number is not picked on the test
set. The whole grid on the test split is printed too.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from weightscope.concepts.explainer import ConceptExplainer  # noqa: E402

TOPS = (1, 2, 3, 5, 8, 12, 20, 30, 50)
QUERIES = {
    "home backgrounds": ["blue background", "green background"],
    "all backgrounds": ["blue background", "green background", "gray background", "black background"],
    "background": ["background"],
    "blue / green": ["blue", "green"],
}


class Split:
    """One rendered group split and the zero-shot family classifier (edits touch only the vision tower, so the
    text side, and with it the classifier, is the same for every edited model)."""

    def __init__(self, model, tok, n_per_group, seed):
        from weightscope.analyses import zeroshot
        from weightscope.shapes import evaluate as sev
        from weightscope.shapes import world

        images, self.labels, groups, _ = world.group_split(n_per_group, seed)
        self.x = sev.images_to_tensor(images)
        self.groups = np.array(world.GROUP_NAMES)[groups]
        names, templates = sev.TASKS["family"]
        self.clf = zeroshot.build_classifier(model, tok, names, templates)

    def evaluate(self, model):
        from weightscope.analyses import zeroshot

        r = zeroshot.zero_shot_accuracy(model, self.x, self.labels, self.clf, groups=self.groups, batch_size=500)
        return {"avg": r["accuracy"], "worst": r["worst_accuracy"], "worst_group": r["worst_group"],
                "groups": r["groups"]}


def main(argv=None) -> int:
    import torch

    from weightscope import load_model
    from weightscope.analyses.edit import apply_edits
    from weightscope.models.adapters import describe_model
    from weightscope.analyses.select import score_by_query
    from weightscope.shapes import evaluate as sev

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-group", type=int, default=500, help="test images per group (seed 30000)")
    p.add_argument("--val-per-group", type=int, default=250, help="validation images per group (seed 31000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    loaded = load_model()  # the bundled shapes-world model (base checkpoint)
    model, tok = loaded.model, loaded.tokenizer
    weights = describe_model(model)
    n_layers = weights.n_layers
    VAL, TEST = 31_000, 30_000
    splits = {"val": Split(model, tok, a.val_per_group, VAL), "test": Split(model, tok, a.per_group, TEST)}
    base = {s: split.evaluate(model) for s, split in splits.items()}
    fam = sev.attribute_accuracies(model, tok, tasks=["family", "shape"])
    print(f"model: {loaded.identity}, {n_layers} layers x {weights.n_heads} heads, head width "
          f"{weights.layers[0].attn.head_width}")
    print(f"unedited: test worst-group {base['test']['worst']:.3f} ({base['test']['worst_group']}), "
          f"average {base['test']['avg']:.3f}; val worst {base['val']['worst']:.3f}, avg {base['val']['avg']:.3f}; "
          f"in-distribution family {fam['family']:.3f}, shape {fam['shape']:.3f}")
    print("  test groups: " + ", ".join(f"{g} {v:.3f}" for g, v in base["test"]["groups"].items()))

    layer_sets = {"all": None, f"last half ({n_layers // 2}-{n_layers - 1})": list(range(n_layers // 2, n_layers))}
    # image mean of pre-training-distribution images (seed far from the splits): SITH's modality-gap correction
    from weightscope.analyses import zeroshot
    from weightscope.shapes import world

    mean_images, _ = world.single_objects(1000, seed=32_000)
    img_mean = zeroshot.encode_images(model, sev.images_to_tensor(mean_images)).astype(np.float64).mean(0)
    scorings = [("joint", "shapes_world", False), ("joint", None, False), ("joint", "shapes_world", True),
                ("explanation", "shapes_world", False)]
    rows = []
    for qname, queries in QUERIES.items():
        for lname, layers in layer_sets.items():
            for by, vocab, use_mean in scorings:
                ranked = score_by_query(loaded, queries, explainer=ConceptExplainer(vocab), weights=weights, layers=layers, by=by, image_mean=img_mean if use_mean else None, alpha=0.0, progress=False)
                for top in TOPS:
                    edits = ranked[:top]
                    edited = apply_edits(model, edits, weights=weights)
                    res = {s: split.evaluate(edited) for s, split in splits.items()}
                    rows.append({"query": qname, "queries": queries, "layers": lname, "by": by,
                                 "vocab": vocab or "none", "image_mean": use_mean, "top": top, "_edits": edits,
                                 "directions": [e.label() for e in edits],
                                 "scores": [round(e.score, 4) for e in edits], **res})
        print(f"  swept query {qname!r} ({time.perf_counter() - t_start:.0f} s)")

    def dv(r, s, k):
        return 100 * (r[s][k] - base[s][k])

    print(f"\nall {len(rows)} settings, test split ({4 * a.per_group} images; points vs unedited)")
    print(f"{'query':<17}{'layers':<19}{'scoring':<26}{'top':>4}{'worst':>8}{'d worst':>9}{'avg':>8}{'d avg':>8}"
          f"{'val d worst':>13}{'val d avg':>11}")
    for r in rows:
        scoring = f"{r['by']}/{r['vocab']}" + ("+imgmean" if r["image_mean"] else "")
        print(f"{r['query']:<17}{r['layers']:<19}{scoring:<26}{r['top']:>4}{r['test']['worst']:>8.3f}"
              f"{dv(r, 'test', 'worst'):>+9.1f}{r['test']['avg']:>8.3f}{dv(r, 'test', 'avg'):>+8.1f}"
              f"{dv(r, 'val', 'worst'):>+13.1f}{dv(r, 'val', 'avg'):>+11.1f}")

    ok = [r for r in rows if dv(r, "val", "avg") >= -2.0]
    chosen = max(ok, key=lambda r: (r["val"]["worst"], -r["top"])) if ok else None
    print("\nchosen on validation (max worst-group with avg >= unedited - 2 points):")
    if chosen is None:
        print("  no setting kept validation average accuracy within 2 points")
    else:
        t = chosen["test"]
        print(f"  query {chosen['queries']}, layers {chosen['layers']}, scoring {chosen['by']}/{chosen['vocab']}"
              f"{' + image mean' if chosen['image_mean'] else ''}, "
              f"top {chosen['top']}: {', '.join(chosen['directions'])}")
        print(f"  TEST worst-group {base['test']['worst']:.3f} -> {t['worst']:.3f} ({dv(chosen, 'test', 'worst'):+.1f} "
              f"points, {t['worst_group']}), average {base['test']['avg']:.3f} -> {t['avg']:.3f} "
              f"({dv(chosen, 'test', 'avg'):+.1f} points)")
        print("  test groups after: " + ", ".join(f"{g} {v:.3f}" for g, v in t["groups"].items()))
        edited = apply_edits(model, chosen["_edits"], weights=weights)
        after = sev.attribute_accuracies(edited, tok, tasks=["family", "shape", "background"])
        before = sev.attribute_accuracies(model, tok, tasks=["background"])
        print(f"  in-distribution zero-shot after the edit: family {fam['family']:.3f} -> {after['family']:.3f}, "
              f"shape {fam['shape']:.3f} -> {after['shape']:.3f}, background {before['background']:.3f} -> "
              f"{after['background']:.3f}")
    goal = [r for r in rows if dv(r, "test", "worst") >= 10 and dv(r, "test", "avg") >= -2]
    print(f"\nsettings meeting the goal on test (worst +10, avg within -2): {len(goal)} of {len(rows)}")
    print(f"total time {time.perf_counter() - t_start:.0f} s")
    if a.json:
        with open(a.json, "w") as fh:
            clean = [{k: v for k, v in r.items() if k != "_edits"} for r in rows]
            json.dump({"base": base, "rows": clean, "chosen": clean[rows.index(chosen)] if chosen else None}, fh,
                      indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
