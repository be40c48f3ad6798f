"""A family of fine-tunes of the bundled shapes-world base, and the comparison harness run over them.

    python benchmarks/finetune_family.py --out benchmarks/results/family            # train, then compare
    python benchmarks/finetune_family.py --out DIR --steps 40 --batch-size 64       # shorter runs (default 150 x 128)
    python benchmarks/finetune_family.py --out DIR --compare-only                   # reuse trained checkpoints

Each member starts from the bundled base and is trained briefly (same loss and optimiser as the shipped tuned
model, ``weightscope.shapes.train.train``) on one shifted world:

  control      the base's own world, a new seed (how much does fine-tuning move the heads by itself?)
  decorrelated backgrounds independent of shape family (the spurious cue removed; the shipped tuned model's shift)
  no-red       red objects never appear (drawn in another colour; captions say that colour)
  mirrored     images mirrored left-right, captions unchanged ("left" now names objects on the right)

The shift is applied by wrapping ``world.sample_scenes`` for the duration of one run (every training batch is drawn
through it), so the training code is the shipped one. Then ``weightscope.analyses.harness.run_harness`` compares the base
with every member (one task per checkpoint) and writes the summary table and report under OUT/compare.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from weightscope.core.fileio import write_atomic  # noqa: E402
from weightscope.shapes import bundled, world  # noqa: E402


def _no_red(scenes):
    # orange never clashes with a background (blue, green, gray, black), so the object stays visible
    colour = np.where(scenes.colour == world.COLOUR_NAMES.index("red"), world.COLOUR_NAMES.index("orange"),
                      scenes.colour)
    return world.Scenes(**{**scenes.__dict__, "colour": colour})


def _mirrored(scenes):
    centre = scenes.centre.copy()
    centre[..., 0] = scenes.image_size - centre[..., 0]
    return world.Scenes(**{**scenes.__dict__, "centre": centre})


SHIFTS = {
    "control": (None, {"spurious_strength": 0.9}),
    "decorrelated": (None, {"spurious_strength": None}),
    "no-red": (_no_red, {"spurious_strength": 0.9}),
    "mirrored": (_mirrored, {"spurious_strength": 0.9}),
}


@contextlib.contextmanager
def shifted_world(transform):
    """Every scene drawn inside the block goes through ``transform`` (None: unchanged)."""
    original = world.sample_scenes
    if transform is not None:
        world.sample_scenes = lambda *a, **k: transform(original(*a, **k))
    try:
        yield
    finally:
        world.sample_scenes = original


def train_family(out: Path, names, steps: int, batch_size: int, lr: float) -> dict[str, Path]:
    from weightscope.shapes.train import train

    base = bundled.checkpoint_path("base")
    paths = {}
    for name in names:
        path = out / f"ft-{name}.safetensors"
        paths[name] = path
        if path.is_file():
            print(f"{name}: {path} exists, not retrained")
            continue
        transform, kw = SHIFTS[name]
        t0 = time.time()
        with shifted_world(transform):
            meta = train(path, init=base, seed=10 + list(SHIFTS).index(name), steps=steps, batch_size=batch_size,
                         lr=lr, warmup=max(1, steps // 10), save_every=steps, log_every=max(1, steps // 4),
                         contrast={"position": 0.5, "shape": 0.5}, **kw)
        print(f"{name}: {steps} steps in {time.time() - t0:.0f} s, final loss {meta['final_loss']}", flush=True)
    return paths


def evaluate(paths: dict, n: int) -> dict:
    """Zero-shot accuracies of the base and every member: shape, colour, position (pre-training world), the
    worst shape-family group (backgrounds balanced), and red objects' colour accuracy."""
    import open_clip
    import torch

    from weightscope.analyses import zeroshot
    from weightscope.shapes.evaluate import TASKS, attribute_accuracies, images_to_tensor, spurious_accuracies

    bundled.register()
    tok = open_clip.get_tokenizer(bundled.MODEL_NAME)
    images, scenes = world.single_objects(n, 40_000)
    red = scenes.colour[:, 0] == world.COLOUR_NAMES.index("red")
    out = {}
    for name, path in {"base": bundled.checkpoint_path("base"), **paths}.items():
        model = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(path)).eval()
        with torch.no_grad():
            acc = attribute_accuracies(model, tok, n=n, tasks=["shape", "colour", "position"])
            acc["worst group"] = spurious_accuracies(model, tok, n_per_group=n // 4)["worst_accuracy"]
            clf = zeroshot.build_classifier(model, tok, *TASKS["colour"])
            acc["red colour"] = zeroshot.zero_shot_accuracy(model, images_to_tensor(images[red]),
                                                            scenes.colour[red, 0], clf)["accuracy"]
        out[name] = {k: round(float(v), 3) for k, v in acc.items()}
        print(name, out[name], flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", default="benchmarks/results/family")
    p.add_argument("--shifts", default=",".join(SHIFTS), help=f"comma list of {', '.join(SHIFTS)}")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--compare-only", action="store_true", help="reuse the checkpoints already in OUT")
    p.add_argument("--train-only", action="store_true", help="train the family, compare later")
    p.add_argument("--workers", type=int, default=None, help="dask workers (default: in-process)")
    p.add_argument("--eval-images", type=int, default=600, help="images per zero-shot task (0: no evaluation)")
    a = p.parse_args(argv)
    names = [s.strip() for s in a.shifts.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SHIFTS))
    if unknown:
        p.error(f"unknown shift(s) {unknown}; choose from {sorted(SHIFTS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    if a.compare_only:
        paths = {n: out / f"ft-{n}.safetensors" for n in names}
    else:
        paths = train_family(out, names, a.steps, a.batch_size, a.lr)
    if a.train_only:
        return 0

    from weightscope.analyses.harness import run_harness

    specs = [(name, str(path)) for name, path in paths.items()] + [("shipped-tuned", "bundled:tuned")]
    from weightscope.bundled import spec_loading

    summary = run_harness("bundled", specs, out / "compare", workers=a.workers, in_process=a.workers is None,
                          loading=spec_loading())
    print(summary.table())
    record = {"recipe": {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr}, "members": {}}
    for c in summary.comparisons:
        rec = {"rel_change": c.rel_change, "in_basis_share": c.in_basis_share,
               "chance_in_basis_share": c.chance_in_basis_share, "mean_match_cos": c.mean_match_cos,
               **c.counts(), "intruders": c.intruder_counts(), "log2_ratio_mean_sd": [
                   float(c.sigma_ratios().mean()), float(c.sigma_ratios().std())],
               "layer_rel_change": [r["mean_rel_change"] for r in c.layer_summary()],
               "top_heads": [[h.layer, h.head, h.rel_change, h.in_basis_share] for h in c.top_heads(4)]}
        record["members"][c.tuned] = rec
        print(c.tuned, json.dumps(rec, default=float))
    control = next((c for c in summary.comparisons if c.tuned == "control"), None)
    for c in summary.comparisons:
        if control is not None and c is not control:
            # the shift's trace beyond fine-tuning's own drift: heads that moved most relative to the control run
            excess = sorted(((c[k].rel_change / max(control[k].rel_change, 1e-12), k) for k in c.heads), reverse=True)
            record["members"][c.tuned]["heads_over_control"] = [[l, h, round(x, 2)] for x, (l, h) in excess[:4]]
            print(f"{c.tuned}: heads moved most relative to control (ratio of rel. change): "
                  + ", ".join(f"L{l}H{h} {x:.2f}x" for x, (l, h) in excess[:4]))
    if a.eval_images:
        record["zero_shot"] = evaluate(paths, a.eval_images)
    write_atomic(out / "family.json", json.dumps(record, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
